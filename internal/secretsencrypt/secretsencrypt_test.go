package secretsencrypt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

type dataCtx string

func (d dataCtx) AuthenticatedData() []byte { return []byte(d) }

// transformer loads the rendered configuration the way the apiserver does.
func transformer(t *testing.T, s *State) value.Transformer {
	t.Helper()
	b, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "encryption-config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := encryptionconfig.LoadEncryptionConfig(context.Background(), path, true, "test")
	if err != nil {
		t.Fatalf("the apiserver refuses the configuration: %v\n%s", err, b)
	}
	tr, ok := cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
	if !ok {
		t.Fatalf("no transformer for secrets: %v", cfg.Transformers)
	}
	return tr
}

// TestConfig: the apiserver's own loader takes the configuration; Secrets
// are written under the active key and read back, values of the older key
// and values in clear stay readable (and stale, so a rewrite moves them to
// the active key); with no active key Secrets are written in clear.
func TestConfig(t *testing.T) {
	ctx := context.Background()
	dc := dataCtx("/registry/secrets/default/s")
	older, err := New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	oldOnly := transformer(t, older)
	underOld, err := oldOnly.TransformToStorage(ctx, []byte("old"), dc)
	if err != nil {
		t.Fatal(err)
	}
	s.Keys = append(s.Keys, older.Keys...)
	tr := transformer(t, s)

	stored, err := tr.TransformToStorage(ctx, []byte("hello"), dc)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := KeyOf(stored); err != nil || name != "secretbox-20260601T000000Z" || strings.Contains(string(stored), "hello") {
		t.Fatalf("stored %q: key %q, %v", stored, name, err)
	}
	for _, c := range []struct {
		stored, want string
		stale        bool
	}{{string(stored), "hello", false}, {string(underOld), "old", true}, {"in clear", "in clear", true}} {
		got, stale, err := tr.TransformFromStorage(ctx, []byte(c.stored), dc)
		if err != nil || string(got) != c.want || stale != c.stale {
			t.Errorf("reading %.30q: %q, stale %v, %v; want %q, stale %v", c.stored, got, stale, err, c.want, c.stale)
		}
	}

	s.Active = ""
	tr = transformer(t, s)
	clear, err := tr.TransformToStorage(ctx, []byte("hello"), dc)
	if err != nil || string(clear) != "hello" {
		t.Fatalf("disabled: stored %q, %v", clear, err)
	}
	if got, stale, err := tr.TransformFromStorage(ctx, stored, dc); err != nil || string(got) != "hello" || !stale {
		t.Fatalf("disabled: reading an encrypted Secret: %q, stale %v, %v (stale makes a rewrite store it in clear)", got, stale, err)
	}

	// No keys at all (a cluster that never had any): the apiserver loads
	// identity alone, and writes in clear.
	tr = transformer(t, nil)
	if clear, err := tr.TransformToStorage(ctx, []byte("hello"), dc); err != nil || string(clear) != "hello" {
		t.Fatalf("no keys: stored %q, %v", clear, err)
	}
}

func TestValidate(t *testing.T) {
	s, err := New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]func(*State){
		"short key":      func(s *State) { s.Keys[0].Secret = s.Keys[0].Secret[:16] },
		"unknown active": func(s *State) { s.Active = "nope" },
		"bad name":       func(s *State) { s.Keys[0].Name, s.Active = "a:b", "a:b" },
		"twice":          func(s *State) { s.Keys = append(s.Keys, s.Keys[0]) },
	} {
		c := &State{Keys: append([]Key(nil), s.Keys...), Active: s.Active}
		c.Keys[0].Secret = append([]byte(nil), s.Keys[0].Secret...)
		bad(c)
		if _, err := c.Config(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestKeyOf(t *testing.T) {
	for v, want := range map[string]string{
		"k8s:enc:secretbox:v1:secretbox-1:xyz": "secretbox-1",
		"\x6b8s\x00 protobuf in clear":         "",
	} {
		if got, err := KeyOf([]byte(v)); err != nil || got != want {
			t.Errorf("KeyOf(%q) = %q, %v; want %q", v, got, err, want)
		}
	}
	if _, err := KeyOf([]byte("k8s:enc:aescbc:v1:key1:xyz")); err == nil {
		t.Error("another provider's value: no error")
	}
}

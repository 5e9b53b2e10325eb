package bootstrap

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hakube/hakube/internal/secretsencrypt"
)

func TestEncryptRoundTrip(t *testing.T) {
	d := Data{Files: map[string][]byte{"server-ca.crt": []byte("PEM")}, Critical: Critical{ClusterCIDR: "10.42.0.0/16", Datastore: "etcd"}}
	blob, err := Encrypt("secret", d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(blob), "PEM") || strings.Contains(string(blob), "10.42") {
		t.Fatal("plaintext visible in the encrypted blob")
	}
	got, err := Decrypt("secret", blob)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Files["server-ca.crt"]) != "PEM" || got.Critical != d.Critical {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := Decrypt("other", blob); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("wrong secret: %v", err)
	}
	blob[len(blob)-1] ^= 1
	if _, err := Decrypt("secret", blob); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("tampered blob: %v", err)
	}
	if _, err := Decrypt("secret", blob[:10]); err == nil {
		t.Fatal("truncated blob accepted")
	}
}

func TestKeyDependsOnSecret(t *testing.T) {
	if Key("a") == Key("b") || !strings.HasPrefix(Key("a"), Prefix) || strings.Contains(Key("secret"), "secret") {
		t.Fatalf("keys: %s %s", Key("a"), Key("b"))
	}
}

func TestMismatchesListsEveryFlag(t *testing.T) {
	mine := Critical{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", Datastore: "etcd"}
	theirs := mine
	if m := mine.Mismatches(theirs); len(m) != 0 {
		t.Fatalf("equal settings mismatch: %v", m)
	}
	theirs.ServiceCIDR, theirs.ClusterDomain = "10.99.0.0/16", "corp.local"
	m := mine.Mismatches(theirs)
	if len(m) != 2 || !strings.Contains(m[0], "--service-cidr") || !strings.Contains(m[1], "--cluster-domain") {
		t.Fatalf("mismatches: %v", m)
	}
	if !strings.Contains(MismatchError(m).Error(), "corp.local") {
		t.Fatal(MismatchError(m).Error())
	}
}

// TestVersionWithKeys: data holding Secrets keys is version 2, so a hakube
// that reads only version 1 refuses it instead of running without them.
func TestVersionWithKeys(t *testing.T) {
	keys, err := secretsencrypt.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		keys *secretsencrypt.State
		want int
	}{{nil, 1}, {keys, 2}} {
		blob, err := Encrypt("secret", Data{Encryption: c.keys})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decrypt("secret", blob)
		if err != nil || got.Version != c.want || (c.keys != nil && got.Encryption.Active != keys.Active) {
			t.Fatalf("keys %v: version %d, %+v, %v; want version %d", c.keys != nil, got.Version, got.Encryption, err, c.want)
		}
	}
}

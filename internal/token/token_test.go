package token

import (
	"strings"
	"testing"
)

func TestParseFull(t *testing.T) {
	hash := HashCA([]byte("ca"))
	tok, err := Parse("K10" + hash + "::server:s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != hash || tok.User != "server" || tok.Secret != "s3cret" {
		t.Fatalf("parsed %+v", tok)
	}
	if got := tok.String(); got != "K10"+hash+"::server:s3cret" {
		t.Fatalf("String() = %q", got)
	}
}

func TestParseShort(t *testing.T) {
	tok, err := Parse("  mysecret\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != "" || tok.Secret != "mysecret" || tok.User != ServerUser {
		t.Fatalf("parsed %+v", tok)
	}
	if tok.String() != "mysecret" {
		t.Fatalf("String() = %q", tok.String())
	}
	full := tok.WithCA([]byte("bundle"))
	if full.CAHash != HashCA([]byte("bundle")) || !strings.HasPrefix(full.String(), "K10") {
		t.Fatalf("WithCA: %+v", full)
	}
	again, err := Parse(full.String())
	if err != nil || again != full {
		t.Fatalf("round trip: %+v, %v", again, err)
	}
}

func TestParseRejects(t *testing.T) {
	hash := HashCA([]byte("ca"))
	cases := map[string]string{
		"":                      "empty",
		"K10abc::server:secret": "lowercase hex",
		"K10" + strings.ToUpper(hash) + "::server:x": "lowercase hex",
		"K10" + hash + "::serversecret":              "user",
		"K10" + hash + "::server:":                   "secret is empty",
		"K10" + hash + "::" + ":secret":              "user is empty",
		"K10" + hash + "::ser ver:secret":            "forbidden",
		"has space":                                  "printable",
		"tab\tinside":                                "printable",
		"caf\u00e9":                                  "printable",
		strings.Repeat("a", 5000):                    "at most",
	}
	for in, want := range cases {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error containing %q", in, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func TestRandomIsUniqueAndValid(t *testing.T) {
	a, b := Random(), Random()
	if a.Secret == b.Secret || len(a.Secret) != 64 {
		t.Fatalf("random secrets %q %q", a.Secret, b.Secret)
	}
	if _, err := Parse(a.String()); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// formats back to a string that parses to the same token.
func FuzzParse(f *testing.F) {
	hash := HashCA([]byte("ca"))
	for _, s := range []string{"secret", "K10" + hash + "::server:secret", "K10::", "K10" + hash + "::a:b:c", "::", "K10x::y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String %q does not parse: %v", s, tok.String(), err)
		}
		if again != tok {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, tok)
		}
	})
}

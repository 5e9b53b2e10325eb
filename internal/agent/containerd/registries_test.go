package containerd

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/pelletier/go-toml/v2"
)

// hostsFile is what a test reads back from a hosts.toml.
type hostsFile struct {
	Server     string              `toml:"server"`
	CA         string              `toml:"ca"`
	Client     [][]string          `toml:"client"`
	SkipVerify *bool               `toml:"skip_verify"`
	Header     map[string]string   `toml:"header"`
	Host       map[string]hostItem `toml:"host"`
}

type hostItem struct {
	Capabilities []string          `toml:"capabilities"`
	CA           string            `toml:"ca"`
	Client       [][]string        `toml:"client"`
	SkipVerify   *bool             `toml:"skip_verify"`
	Header       map[string]string `toml:"header"`
}

func writeTestFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readHosts(t *testing.T, path string) (hostsFile, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h hostsFile
	if err := toml.Unmarshal(b, &h); err != nil {
		t.Fatalf("%s is not TOML: %v\n%s", path, err, b)
	}
	return h, string(b)
}

// hostOrder is the order of the [host."..."] tables in text.
func hostOrder(text string) []string {
	var order []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "[host."); ok && !strings.HasSuffix(line, ".header]") {
			if s, err := strconv.Unquote(strings.TrimSuffix(rest, "]")); err == nil {
				order = append(order, s)
			}
		}
	}
	return order
}

func TestRegistriesFull(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "client.pem", "client-key.pem"} {
		writeTestFile(t, filepath.Join(dir, f), "not checked here\n")
	}
	path := filepath.Join(dir, "registries.yaml")
	writeTestFile(t, path, `
mirrors:
  docker.io:
    endpoint:
      - "https://mirror-a.example.com:5000"
      - "http://mirror-b.example.com"
  "*":
    endpoint:
      - "https://everything.example.com"
configs:
  "registry.example.com:5443":
    auth:
      username: user
      password: pass
    tls:
      ca_file: `+filepath.Join(dir, "ca.pem")+`
      cert_file: client.pem
      key_file: client-key.pem
  "mirror-a.example.com:5000":
    auth:
      auth: `+base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))+`
    tls:
      insecure_skip_verify: true
`)
	r, err := LoadRegistries(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Mirrors["docker.io"].Endpoints; len(got) != 2 {
		t.Fatalf("docker.io endpoints: %v", got)
	}
	// Relative TLS files are taken from the file's directory.
	if got := r.Configs["registry.example.com:5443"].TLS.CertFile; got != filepath.Join(dir, "client.pem") {
		t.Fatalf("cert_file = %q", got)
	}

	hosts := filepath.Join(dir, "certs.d")
	if err := r.WriteHosts(hosts, LocalMirror{}); err != nil {
		t.Fatal(err)
	}
	basic := func(up string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(up)) }

	// docker.io: the two mirrors in order, then Docker Hub itself.
	h, text := readHosts(t, filepath.Join(hosts, "docker.io", "hosts.toml"))
	if h.Server != "https://registry-1.docker.io" {
		t.Errorf("docker.io server = %q", h.Server)
	}
	if got, want := hostOrder(text), []string{"https://mirror-a.example.com:5000", "http://mirror-b.example.com"}; !reflect.DeepEqual(got, want) {
		t.Errorf("docker.io hosts in order %v, want %v\n%s", got, want, text)
	}
	a, b := h.Host["https://mirror-a.example.com:5000"], h.Host["http://mirror-b.example.com"]
	for _, e := range []hostItem{a, b} {
		if !reflect.DeepEqual(e.Capabilities, []string{"pull", "resolve"}) {
			t.Errorf("capabilities = %v", e.Capabilities)
		}
	}
	if a.SkipVerify == nil || !*a.SkipVerify || a.Header["Authorization"] != basic("alice:s3cret") {
		t.Errorf("mirror-a: skip_verify %v, header %v", a.SkipVerify, a.Header)
	}
	if b.SkipVerify != nil || b.Header != nil || b.CA != "" || h.Header != nil {
		t.Errorf("mirror-b or the server got settings of another host: %+v %v\n%s", b, h.Header, text)
	}

	// The private registry: no mirror of its own, so the "*" mirror, then
	// itself with its TLS and credentials.
	h, text = readHosts(t, filepath.Join(hosts, "registry.example.com:5443", "hosts.toml"))
	if h.Server != "https://registry.example.com:5443" {
		t.Errorf("private server = %q", h.Server)
	}
	if h.CA != filepath.Join(dir, "ca.pem") {
		t.Errorf("ca = %q", h.CA)
	}
	if want := [][]string{{filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")}}; !reflect.DeepEqual(h.Client, want) {
		t.Errorf("client = %v, want %v", h.Client, want)
	}
	if h.SkipVerify != nil {
		t.Errorf("skip_verify = %v", *h.SkipVerify)
	}
	if h.Header["Authorization"] != basic("user:pass") {
		t.Errorf("Authorization = %q, want %q", h.Header["Authorization"], basic("user:pass"))
	}
	if got := hostOrder(text); !reflect.DeepEqual(got, []string{"https://everything.example.com"}) {
		t.Errorf("private hosts = %v", got)
	}

	// "*" is containerd's _default, without a server of its own.
	h, text = readHosts(t, filepath.Join(hosts, "_default", "hosts.toml"))
	if h.Server != "" || !reflect.DeepEqual(hostOrder(text), []string{"https://everything.example.com"}) {
		t.Errorf("_default:\n%s", text)
	}

	// The config-only mirror-a host gets a directory too (as a registry of its own).
	if _, err := os.Stat(filepath.Join(hosts, "mirror-a.example.com:5000", "hosts.toml")); err != nil {
		t.Error(err)
	}

	// Credentials are only readable by the owner.
	err = filepath.Walk(hosts, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The CRI snippet points at the directory.
	var cfg map[string]any
	if err := toml.Unmarshal([]byte(RegistryConfigTOML(hosts)), &cfg); err != nil {
		t.Fatal(err)
	}
	reg := cfg["plugins"].(map[string]any)["io.containerd.cri.v1.images"].(map[string]any)["registry"].(map[string]any)
	if reg["config_path"] != hosts {
		t.Errorf("config_path = %v", reg["config_path"])
	}

	// A second write without the docker.io mirror removes its directory,
	// and whatever else is in the directory.
	stray := filepath.Join(hosts, "stray.example.com")
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	delete(r.Mirrors, "docker.io")
	if err := r.WriteHosts(hosts, LocalMirror{}); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{filepath.Join(hosts, "docker.io"), stray} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(hosts, "_default", "hosts.toml")); err != nil {
		t.Error(err)
	}

	// The node's own mirror comes before every registry's mirrors, with no
	// credentials or TLS settings of theirs.
	const local = "http://127.0.0.1:40123"
	mirror := LocalMirror{URL: local, Header: map[string]string{"X-Hakube-Mirror-Token": "t0ken"}}
	if err := r.WriteHosts(hosts, mirror); err != nil {
		t.Fatal(err)
	}
	for sub, want := range map[string][]string{
		"_default":                  {local, "https://everything.example.com"},
		"registry.example.com:5443": {local, "https://everything.example.com"},
	} {
		h, text := readHosts(t, filepath.Join(hosts, sub, "hosts.toml"))
		if got := hostOrder(text); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: hosts %v, want %v\n%s", sub, got, want, text)
		}
		if l := h.Host[local]; !reflect.DeepEqual(l.Capabilities, []string{"pull", "resolve"}) || !reflect.DeepEqual(l.Header, mirror.Header) ||
			l.SkipVerify != nil || l.CA != "" {
			t.Errorf("%s: the local mirror is %+v\n%s", sub, l, text)
		}
	}
	// containerd's own reading of the directory: a registry named nowhere
	// (quay.io) goes to the local mirror first, with its token, then to
	// the "*" mirror, then to itself.
	regHosts, err := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(hosts)})("quay.io")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range regHosts {
		got = append(got, h.Scheme+"://"+h.Host+h.Path)
	}
	if want := []string{"http://127.0.0.1:40123/v2", "https://everything.example.com/v2", "https://quay.io/v2"}; !reflect.DeepEqual(got, want) ||
		regHosts[0].Header.Get("X-Hakube-Mirror-Token") != "t0ken" {
		t.Errorf("containerd's hosts for quay.io: %v (first header %v), want %v", got, regHosts[0].Header, want)
	}

	// No registries: an empty directory, or the local mirror for every registry.
	if err := (*Registries)(nil).WriteHosts(hosts, LocalMirror{}); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(hosts); err != nil || len(ents) != 0 {
		t.Errorf("after nil: %v %v", ents, err)
	}
	if err := (*Registries)(nil).WriteHosts(hosts, mirror); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(hosts); err != nil || len(ents) != 1 || ents[0].Name() != "_default" {
		t.Errorf("nil with a local mirror: %v %v", ents, err)
	}
	if h, text := readHosts(t, filepath.Join(hosts, "_default", "hosts.toml")); h.Server != "" || !reflect.DeepEqual(hostOrder(text), []string{local}) {
		t.Errorf("nil with a local mirror:\n%s", text)
	}
}

func TestLoadRegistriesMissing(t *testing.T) {
	r, err := LoadRegistries(filepath.Join(t.TempDir(), "registries.yaml"))
	if r != nil || err != nil {
		t.Fatalf("missing file: %v, %v", r, err)
	}
}

func TestLoadRegistriesBad(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "cert.pem"), "x")
	for _, tc := range []struct {
		name, yaml string
		want       []string // all in the error
	}{
		{"credentials for every registry", "configs:\n  \"*\":\n    auth: {username: u, password: p}\n", []string{`configs."*".auth`, "every registry"}},
		{"unknown field", "mirrors:\n  docker.io:\n    endpoints: [\"https://m.example.com\"]\n", []string{"registries.yaml", "endpoints"}},
		{"unknown top-level field", "mirror: {}\n", []string{"registries.yaml", "mirror"}},
		{"endpoint not a URL", "mirrors:\n  docker.io:\n    endpoint: [\"https://ok.example.com\", \"mirror.example.com\"]\n", []string{`mirrors."docker.io".endpoint[1]`, "mirror.example.com"}},
		{"endpoint not http", "mirrors:\n  docker.io:\n    endpoint: [\"ftp://m.example.com\"]\n", []string{`mirrors."docker.io".endpoint[0]`, "http(s)"}},
		{"missing ca_file", "configs:\n  r.example.com:\n    tls:\n      ca_file: /nonexistent/ca.pem\n", []string{`configs."r.example.com".tls.ca_file`, "/nonexistent/ca.pem"}},
		{"cert without key", "configs:\n  r.example.com:\n    tls:\n      cert_file: " + filepath.Join(dir, "cert.pem") + "\n", []string{`configs."r.example.com".tls`, "cert_file and key_file"}},
		{"mirror name with scheme", "mirrors:\n  \"https://docker.io\":\n    endpoint: [\"https://m.example.com\"]\n", []string{`mirrors."https://docker.io"`, "registry name"}},
		{"mirror name with path", "mirrors:\n  docker.io/library:\n    endpoint: [\"https://m.example.com\"]\n", []string{`mirrors."docker.io/library"`, "registry name"}},
		{"mirror name bad port", "mirrors:\n  docker.io:x:\n    endpoint: [\"https://m.example.com\"]\n", []string{`mirrors."docker.io:x"`, "registry name"}},
		{"config name", "configs:\n  \"bad host\":\n    tls: {insecure_skip_verify: true}\n", []string{`configs."bad host"`, "registry name"}},
		{"rewrite", "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n    rewrite:\n      \"^library/(.*)\": \"mirror/$1\"\n", []string{`mirrors."docker.io".rewrite`, "not supported"}},
		{"identitytoken", "configs:\n  r.example.com:\n    auth: {identitytoken: abc}\n", []string{`configs."r.example.com".auth`, "identitytoken"}},
		{"auth not base64", "configs:\n  r.example.com:\n    auth: {auth: \"%%%\"}\n", []string{`configs."r.example.com".auth`, "base64"}},
		{"auth and username", "configs:\n  r.example.com:\n    auth: {auth: dTpw, username: u}\n", []string{`configs."r.example.com".auth`, "either"}},
		{"password without username", "configs:\n  r.example.com:\n    auth: {password: p}\n", []string{`configs."r.example.com".auth`, "username"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "registries.yaml")
			writeTestFile(t, path, tc.yaml)
			_, err := LoadRegistries(path)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestCheckRegistryName(t *testing.T) {
	for _, ok := range []string{"*", "docker.io", "registry.example.com:5000", "10.0.0.1", "10.0.0.1:5000", "[::1]:5000", "[fd00::1]", "localhost"} {
		if err := checkRegistryName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "**", "::1", "host:0", "host:70000", "-bad.example.com", "a..b", "[1.2.3.4]", "user@host"} {
		if err := checkRegistryName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTOMLString(t *testing.T) {
	for _, s := range []string{`plain`, `with "quotes" and \ backslash`, "tab\tnew\nline\x01", "ünïcode"} {
		var v struct{ S string }
		if err := toml.Unmarshal([]byte("S = "+tomlString(s)), &v); err != nil || v.S != s {
			t.Errorf("%q: got %q, %v", s, v.S, err)
		}
	}
}

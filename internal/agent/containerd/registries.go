package containerd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/hakube/hakube/internal/fsutil"
)

// Registries is a registries.yaml in K3s's format: mirrors say where images
// of a registry are pulled from, configs how to talk to a registry host
// (credentials and TLS).
//
// containerd reads it as registry host configuration ("config_path" mode):
// WriteHosts writes one <dir>/<registry>/hosts.toml per registry, and
// RegistryConfigTOML is the CRI setting that points containerd at <dir>.
//
// Credentials become a static "Authorization: Basic ..." header in
// hosts.toml. containerd 2.4's other way, the CRI plugin's
// registry.configs.<host>.auth, still works but is deprecated (containerd
// says it is removed in 2.7) and turns off the transfer service for image
// pulls; hosts.toml has no credential fields of its own. With the header a
// registry that asks for Basic auth gets it on the first request, and one
// that answers with a Bearer challenge gets it on the token request (the
// authorizer sends hosts.toml's headers to the token realm), which is how
// such registries take a username and password.
type Registries struct {
	// Mirrors maps a registry (host[:port], or "*" for every registry
	// without a mirror of its own) to the endpoints to pull its images from.
	Mirrors map[string]Mirror `json:"mirrors"`
	// Configs maps a registry host[:port] (a mirror's name or an
	// endpoint's host; "*" for every host without a config of its own) to
	// how to connect to it.
	Configs map[string]RegistryConfig `json:"configs"`
}

// Mirror is the endpoints of one registry, tried in order before the
// registry itself.
type Mirror struct {
	Endpoints []string `json:"endpoint"`
	// Rewrites (K3s's regular-expression rewrites of repository names) need
	// a containerd patched for them; containerd 2.4 has no such setting, so
	// LoadRegistries rejects them.
	Rewrites map[string]string `json:"rewrite"`
}

// RegistryConfig is how to connect to one registry host.
type RegistryConfig struct {
	Auth *Auth `json:"auth"`
	TLS  *TLS  `json:"tls"`
}

// Auth is a registry's credentials: a username and a password, or Auth,
// base64 of "username:password".
type Auth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
	// IdentityToken is an OAuth2 refresh token; containerd's hosts.toml
	// cannot carry one, so LoadRegistries rejects it.
	IdentityToken string `json:"identitytoken"`
}

// TLS is how to verify a registry host and authenticate to it.
type TLS struct {
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// defaultRegistry is the mirror (and config) name that stands for every
// registry; its hosts.toml is in containerd's _default directory.
const defaultRegistry = "*"

// LoadRegistries reads a registries.yaml. A missing file is no registries
// (nil, nil). Relative TLS file names are taken from the file's directory.
func LoadRegistries(path string) (*Registries, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var r Registries
	if err := yaml.UnmarshalStrict(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := r.validate(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func (r *Registries) validate(baseDir string) error {
	for _, name := range sortedKeys(r.Mirrors) {
		m := r.Mirrors[name]
		field := "mirrors." + strconv.Quote(name)
		if err := checkRegistryName(name); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if len(m.Rewrites) > 0 {
			return fmt.Errorf("%s.rewrite: repository rewrites are not supported (containerd's hosts.toml has no such setting); "+
				"give the endpoint the repositories under their own names", field)
		}
		for i, e := range m.Endpoints {
			if err := checkEndpoint(e); err != nil {
				return fmt.Errorf("%s.endpoint[%d]: %w", field, i, err)
			}
		}
	}
	for _, name := range sortedKeys(r.Configs) {
		c := r.Configs[name]
		field := "configs." + strconv.Quote(name)
		if err := checkRegistryName(name); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if a := c.Auth; a != nil {
			if name == "*" {
				// Every registry a pod names would be sent them.
				return fmt.Errorf("%s.auth: credentials for every registry are refused: any pod's image could name a registry that collects them; "+
					"give them under the registry's (or mirror's) own host", field)
			}
			if _, err := a.header(); err != nil {
				return fmt.Errorf("%s.auth: %w", field, err)
			}
		}
		if t := c.TLS; t != nil {
			if (t.CertFile == "") != (t.KeyFile == "") {
				return fmt.Errorf("%s.tls: cert_file and key_file go together: give both or neither", field)
			}
			for _, f := range []struct {
				name string
				path *string
			}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
				if *f.path == "" {
					continue
				}
				if !filepath.IsAbs(*f.path) {
					*f.path = filepath.Join(baseDir, *f.path)
				}
				if st, err := os.Stat(*f.path); err != nil {
					return fmt.Errorf("%s.tls.%s: %w", field, f.name, err)
				} else if st.IsDir() {
					return fmt.Errorf("%s.tls.%s: %s is a directory, not a file", field, f.name, *f.path)
				}
			}
		}
	}
	return nil
}

// checkRegistryName accepts "*" and host[:port], where host is a DNS name,
// an IPv4 address or a bracketed IPv6 address.
func checkRegistryName(name string) error {
	if name == defaultRegistry {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%q is not a registry name (host[:port], or \"*\" for every registry): %s", name, why)
	}
	if strings.Contains(name, "://") || strings.ContainsAny(name, "/?#@ ") {
		return bad("give the host only, without a scheme or a path")
	}
	host := name
	if h, p, err := net.SplitHostPort(name); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("the port is not a number from 1 to 65535")
		}
	} else if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		host = name[1 : len(name)-1]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return bad("the brackets hold no IPv6 address")
		}
	} else if strings.ContainsAny(name, ":[]") {
		return bad("a port needs a host before it and an IPv6 address needs brackets")
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) == 0 || len(host) > 253 {
		return bad("the host is empty or too long")
	}
	for _, label := range strings.Split(host, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad("the host is not a DNS name")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad("the host is not a DNS name")
			}
		}
	}
	return nil
}

func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", e, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http(s) URL (like https://mirror.example.com:5000)", e)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an http(s) URL with a host, and no user, query or fragment", e)
	}
	return nil
}

// header is the Authorization header value of the credentials.
func (a *Auth) header() (string, error) {
	switch {
	case a.IdentityToken != "":
		return "", errors.New("identitytoken is not supported: containerd's hosts.toml cannot carry an OAuth refresh token; give username and password (or auth)")
	case a.Auth != "" && (a.Username != "" || a.Password != ""):
		return "", errors.New("give either auth or username and password, not both")
	case a.Auth != "":
		dec, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return "", fmt.Errorf("auth is not base64 of username:password: %v", err)
		}
		if u, _, ok := strings.Cut(string(dec), ":"); !ok || u == "" {
			return "", errors.New("auth is not base64 of username:password")
		}
		return "Basic " + a.Auth, nil
	case a.Username == "":
		return "", errors.New("username is missing (or give auth)")
	case strings.Contains(a.Username, ":"):
		return "", errors.New("username may not contain ':'")
	default:
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(a.Username+":"+a.Password)), nil
	}
}

// RegistryConfigTOML is the CRI images plugin's registry table, for
// containerd's config version 3, that makes containerd read the hosts.toml
// files under hostsDir (and nothing of the machine's /etc/containerd/certs.d).
// It carries no credentials: those are in the hosts.toml files.
func RegistryConfigTOML(hostsDir string) string {
	return "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = " + tomlString(hostsDir) + "\n"
}

// LocalMirror is the node's own registry mirror: its http:// URL ("" for
// none) and the headers containerd must send it.
type LocalMirror struct {
	URL    string
	Header map[string]string
}

// WriteHosts makes dir hold exactly the hosts.toml files of r and of the
// node's own mirror (dir belongs to hakube: whatever was in it is removed
// first). A nil r and no local mirror leave dir empty.
//
// Every registry with a mirror or a config gets <dir>/<registry>/hosts.toml
// ("*", which the local mirror implies, is containerd's <dir>/_default): the
// local mirror, then its mirror's endpoints, as hosts in order for pull and
// resolve, then the registry itself as the server. A registry with a config
// but no mirror gets the "*" mirror's endpoints. Each host, and the server,
// gets the TLS settings and credentials of its own host's config, else of
// the "*" config; the local mirror gets none.
func (r *Registries) WriteHosts(dir string, local LocalMirror) error {
	if clean := filepath.Clean(dir); dir == "" || clean == "/" || clean == "." {
		return fmt.Errorf("refusing to replace %q as the registry hosts directory", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if r == nil {
		if local.URL == "" {
			return nil
		}
		r = &Registries{}
	}
	names := map[string]bool{}
	if local.URL != "" {
		names[defaultRegistry] = true
	}
	for n := range r.Mirrors {
		names[n] = true
	}
	for n := range r.Configs {
		names[n] = true
	}
	for _, name := range sortedKeys(names) {
		sub := name
		if name == defaultRegistry {
			sub = "_default"
		}
		text, err := r.hostsTOML(name, local)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
		if err := fsutil.WriteFile(filepath.Join(dir, sub, "hosts.toml"), []byte(text), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// hostsTOML is the hosts.toml of one registry, the local mirror first.
func (r *Registries) hostsTOML(name string, local LocalMirror) (string, error) {
	var b strings.Builder
	b.WriteString("# Generated by hakube from registries.yaml: edits are lost.\n")
	// The server: the registry itself, tried after the hosts. "*" has
	// none, so containerd uses the registry being pulled from.
	var serverConfig *RegistryConfig
	if name != defaultRegistry {
		server := "https://" + name
		if name == "docker.io" {
			server = "https://registry-1.docker.io"
		}
		fmt.Fprintf(&b, "server = %s\n", tomlString(server))
		// The server's host (registry-1.docker.io) or the registry's name
		// (docker.io).
		serverConfig = r.config(strings.TrimPrefix(server, "https://"), name)
	} else {
		serverConfig = r.config()
	}
	if err := writeHostSettings(&b, "", serverConfig); err != nil {
		return "", fmt.Errorf("configs for %s: %w", name, err)
	}
	m, ok := r.Mirrors[name]
	if !ok {
		m = r.Mirrors[defaultRegistry]
	}
	if local.URL != "" {
		table := "host." + tomlString(local.URL)
		fmt.Fprintf(&b, "\n[%s]\n  capabilities = [\"pull\", \"resolve\"]\n", table)
		if len(local.Header) > 0 {
			fmt.Fprintf(&b, "  [%s.header]\n", table)
			for _, k := range sortedKeys(local.Header) {
				fmt.Fprintf(&b, "    %s = %s\n", tomlString(k), tomlString(local.Header[k]))
			}
		}
	}
	for _, e := range m.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			return "", err
		}
		table := "host." + tomlString(e)
		fmt.Fprintf(&b, "\n[%s]\n  capabilities = [\"pull\", \"resolve\"]\n", table)
		if err := writeHostSettings(&b, table, r.config(u.Host)); err != nil {
			return "", fmt.Errorf("configs for %s: %w", u.Host, err)
		}
	}
	return b.String(), nil
}

// config is the config of the first of hosts that has one, else the "*"
// config, else nil.
func (r *Registries) config(hosts ...string) *RegistryConfig {
	for _, h := range append(hosts, defaultRegistry) {
		if c, ok := r.Configs[h]; ok {
			return &c
		}
	}
	return nil
}

// writeHostSettings writes the TLS settings and the credentials of c into
// the table (the top level when table is ""); the keys come before the
// header subtable, so they stay in table.
func writeHostSettings(b *strings.Builder, table string, c *RegistryConfig) error {
	if c == nil {
		return nil
	}
	indent := ""
	if table != "" {
		indent = "  "
	}
	if t := c.TLS; t != nil {
		if t.CAFile != "" {
			fmt.Fprintf(b, "%sca = %s\n", indent, tomlString(t.CAFile))
		}
		if t.CertFile != "" {
			fmt.Fprintf(b, "%sclient = [[%s, %s]]\n", indent, tomlString(t.CertFile), tomlString(t.KeyFile))
		}
		if t.InsecureSkipVerify {
			fmt.Fprintf(b, "%sskip_verify = true\n", indent)
		}
	}
	if c.Auth != nil {
		h, err := c.Auth.header()
		if err != nil {
			return err
		}
		sub := "header"
		if table != "" {
			sub = table + ".header"
		}
		fmt.Fprintf(b, "%s[%s]\n%s  Authorization = %s\n", indent, sub, indent, tomlString(h))
	}
	return nil
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c == utf8.RuneError, c < 0x20, c == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

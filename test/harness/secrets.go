package harness

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/hakube/hakube/internal/secretsencrypt"
)

// CanaryValue is the value of the Secret CreateCanarySecret makes: a file
// that holds it holds a Secret in clear.
const CanaryValue = "hakube-canary-plaintext-4f1c9a"

// CreateCanarySecret creates the Secret default/enc-canary through s.
func CreateCanarySecret(t testing.TB, s *Server) {
	t.Helper()
	if out, err := s.Kubectl("create", "secret", "generic", "enc-canary", "--from-literal=value="+CanaryValue); err != nil {
		t.Fatalf("creating the canary Secret: %v\n%s", err, out)
	}
}

// CheckSecretsEncrypted runs 'hakube secrets-encrypt status' on s: enabled,
// every stored Secret under the active key, s's file current. Then each of
// files (a snapshot, a database and its WAL) must hold the active key's
// prefix and never the canary's value. It returns the status.
func CheckSecretsEncrypted(t testing.TB, s *Server, files ...string) secretsencrypt.Status {
	t.Helper()
	out, code := s.Hakube("secrets-encrypt", "status", "-o", "json")
	var st secretsencrypt.Status
	if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); code != 0 || i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &st) != nil {
		t.Fatalf("secrets-encrypt status on %s: exit %d\n%s", s.Name, code, out)
	}
	if !st.Enabled || !st.AllActive || !st.ConfigCurrent || st.Secrets == 0 || st.ByKey[st.Active] != st.Secrets {
		t.Fatalf("secrets-encrypt status on %s: %+v", s.Name, st)
	}
	prefix := []byte("k8s:enc:" + secretsencrypt.Provider + ":v1:" + st.Active + ":")
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(CanaryValue)) {
			t.Fatalf("%s holds a Secret in clear", f)
		}
		all = append(all, b...)
	}
	if len(files) > 0 && !bytes.Contains(all, prefix) {
		t.Fatalf("none of %v holds a Secret encrypted with %s", files, st.Active)
	}
	return st
}

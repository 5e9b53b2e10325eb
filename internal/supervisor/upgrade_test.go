package supervisor

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// TestUpgradeGoesOverHTTP1: behind the proxy, the apiserver's answer to an
// SPDY upgrade (here a denial) reaches the client, although the apiserver
// speaks h2 and ordinary requests use it.
func TestUpgradeGoesOverHTTP1(t *testing.T) {
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			if r.ProtoMajor != 1 {
				t.Errorf("upgrade request over %s", r.Proto)
			}
			http.Error(w, "attaching to pod 'p' is not allowed", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, r.Proto)
	}))
	backend.EnableHTTP2 = true
	backend.StartTLS()
	defer backend.Close()

	target, _ := url.Parse(backend.URL)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: backend.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}, ForceAttemptHTTP2: true}
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: newUpgradeTransport(tr),
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	})
	defer proxy.Close()

	get := func(upgrade string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/api/v1/namespaces/n/pods/p/attach", nil)
		if upgrade != "" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", upgrade)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(""); code != http.StatusOK || body != "HTTP/2.0" {
		t.Fatalf("plain request: %d %q, want 200 over HTTP/2.0", code, body)
	}
	for _, up := range []string{"SPDY/3.1", "websocket"} {
		if code, body := get(up); code != http.StatusForbidden || body != "attaching to pod 'p' is not allowed\n" {
			t.Fatalf("%s upgrade: %d %q, want the apiserver's 403", up, code, body)
		}
	}
}

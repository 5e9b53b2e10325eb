package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPprofOnlyWhenEnabled: profiles are served on loopback with Pprof, and
// not at all without it; metrics are served either way.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint(enabled), func(t *testing.T) {
			port := freePort(t)
			s := New(Config{Hosts: []string{"127.0.0.1"}, Port: port, Pprof: enabled})
			if err := s.Init(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			if code, body := get(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
				t.Fatalf("/metrics: %d %.200s", code, body)
			}
			code, body := get(t, base+"/debug/pprof/cmdline")
			if enabled && code != http.StatusOK {
				t.Fatalf("pprof enabled: /debug/pprof/cmdline answered %d %.200s", code, body)
			}
			if !enabled && code != http.StatusNotFound {
				t.Fatalf("pprof disabled: /debug/pprof/cmdline answered %d, want 404", code)
			}
		})
	}
}

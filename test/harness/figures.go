package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Figures are recorded, printed and written to a JSON report in
// test/artifacts; never asserted.
type Figures map[string]float64

// Record records a duration, in seconds.
func (f Figures) Record(t testing.TB, name string, d time.Duration) {
	f[name] = d.Seconds()
	t.Logf("FIGURE %s=%.2fs", name, d.Seconds())
}

// Set records a value in unit.
func (f Figures) Set(t testing.TB, name string, v float64, unit string) {
	f[name] = v
	t.Logf("FIGURE %s=%.2f%s", name, v, unit)
}

// Write writes the report; the test runs in a package directory under test/.
func (f Figures) Write(t testing.TB, file string) {
	dir := filepath.Join("..", "artifacts")
	_ = os.MkdirAll(dir, 0o755)
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
		t.Log(err)
	}
}

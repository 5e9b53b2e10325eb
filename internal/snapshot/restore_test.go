package snapshot

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hakube/hakube/internal/datastore"
)

// TestPrepare tells the datastore of a snapshot from its content, compressed
// or not, and refuses a damaged file or one of neither kind.
func TestPrepare(t *testing.T) {
	sqlite := "SQLite format 3\x00" + strings.Repeat("x", 200)
	bolt := make([]byte, 200)
	binary.LittleEndian.PutUint32(bolt[16:], 0xED0CDAED)
	d := Dir(t.TempDir())
	work := t.TempDir()
	for name, c := range map[string]struct {
		content  string
		compress bool
		want     datastore.Kind
	}{
		"dq":    {sqlite, false, datastore.Dqlite},
		"dq-gz": {sqlite, true, datastore.Dqlite},
		"etcd":  {string(bolt), false, datastore.Etcd},
		"e-gz":  {string(bolt), true, datastore.Etcd},
	} {
		m, err := d.Save(Meta{Name: name}, strings.NewReader(c.content), c.compress)
		if err != nil {
			t.Fatal(err)
		}
		kind, plain, done, err := Prepare(filepath.Join(string(d), m.Name), work)
		if err != nil || kind != c.want {
			t.Fatalf("%s: kind %q, err %v; want %q", name, kind, err, c.want)
		}
		if b, _ := os.ReadFile(plain); string(b) != c.content {
			t.Fatalf("%s: prepared file differs from what was saved", name)
		}
		done()
		if c.compress && plain != "" {
			if _, err := os.Stat(plain); err == nil {
				t.Fatalf("%s: uncompressed copy left behind", name)
			}
		}
	}
	// Damaged: one byte changed after the metadata was written.
	path := filepath.Join(string(d), "dq")
	b, _ := os.ReadFile(path)
	b[20] ^= 1
	_ = os.WriteFile(path, b, 0o600)
	if _, _, _, err := Prepare(path, work); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged snapshot: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	_ = os.WriteFile(junk, []byte(strings.Repeat("junk", 20)), 0o600)
	if _, _, _, err := Prepare(junk, work); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Fatalf("junk file: %v", err)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Fatalf("Prepare left %d files in its work directory", len(left))
	}
}

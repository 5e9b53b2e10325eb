package layout

import "testing"

// TestPathsAreStable: these paths hold data of servers already running; a
// new version must find them where they are.
func TestPathsAreStable(t *testing.T) {
	l := New("/var/lib/hakube")
	for got, want := range map[string]string{
		l.ServerDir():         "/var/lib/hakube/server",
		string(l.TLS()):       "/var/lib/hakube/server/tls",
		l.APIServerCertDir():  "/var/lib/hakube/server/tls/temporary-certs",
		l.Kubeconfig("admin"): "/var/lib/hakube/server/cred/admin.kubeconfig",
		l.Token():             "/var/lib/hakube/server/token",
		l.Manifests():         "/var/lib/hakube/server/manifests",
		l.DB():                "/var/lib/hakube/server/db",
		l.SQLite():            "/var/lib/hakube/server/db/state.db",
		l.SQLiteFiles()[1]:    "/var/lib/hakube/server/db/state.db-wal",
		l.SQLiteFiles()[2]:    "/var/lib/hakube/server/db/state.db-shm",
		l.KineSocket():        "/var/lib/hakube/server/kine.sock",
		l.Etcd():              "/var/lib/hakube/server/db/etcd",
		l.Dqlite():            "/var/lib/hakube/server/db/dqlite",
		l.DqliteSocket():      "/var/lib/hakube/server/dqlite.sock",
		l.Snapshots():         "/var/lib/hakube/server/db/snapshots",
		l.ResetMarker():       "/var/lib/hakube/server/db/cluster-reset-done",
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
}

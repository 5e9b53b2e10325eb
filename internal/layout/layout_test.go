package layout

import "testing"

// TestPathsAreStable: these paths hold data of servers already running; a
// new version must find them where they are.
func TestPathsAreStable(t *testing.T) {
	l := New("/var/lib/hakube")
	for got, want := range map[string]string{
		l.ServerDir():                "/var/lib/hakube/server",
		string(l.TLS()):              "/var/lib/hakube/server/tls",
		l.APIServerCertDir():         "/var/lib/hakube/server/tls/temporary-certs",
		l.Kubeconfig("admin"):        "/var/lib/hakube/server/cred/admin.kubeconfig",
		l.EncryptionConfig():         "/var/lib/hakube/server/cred/encryption-config.json",
		l.Token():                    "/var/lib/hakube/server/token",
		l.Manifests():                "/var/lib/hakube/server/manifests",
		l.DB():                       "/var/lib/hakube/server/db",
		l.SQLite():                   "/var/lib/hakube/server/db/state.db",
		l.SQLiteFiles()[1]:           "/var/lib/hakube/server/db/state.db-wal",
		l.SQLiteFiles()[2]:           "/var/lib/hakube/server/db/state.db-shm",
		l.KineSocket():               "/var/lib/hakube/server/kine.sock",
		l.Etcd():                     "/var/lib/hakube/server/db/etcd",
		l.Dqlite():                   "/var/lib/hakube/server/db/dqlite",
		l.DqliteSocket():             "/var/lib/hakube/server/dqlite.sock",
		l.Snapshots():                "/var/lib/hakube/server/db/snapshots",
		l.ResetMarker():              "/var/lib/hakube/server/db/cluster-reset-done",
		l.AgentDir():                 "/var/lib/hakube/agent",
		string(l.AgentTLS()):         "/var/lib/hakube/agent/tls",
		l.AgentKubeconfig("kubelet"): "/var/lib/hakube/agent/kubelet.kubeconfig",
		l.NodePassword():             "/var/lib/hakube/agent/node-password",
		l.AgentToken():               "/var/lib/hakube/server/agent-token",
		l.RenewRequest():             "/var/lib/hakube/agent/renew-certificates",
		l.Servers():                  "/var/lib/hakube/agent/etc/servers.json",
		l.Containerd():               "/var/lib/hakube/agent/containerd",
		l.ContainerdConfig():         "/var/lib/hakube/agent/etc/containerd/config.toml",
		l.ContainerdState():          "/var/lib/hakube/agent/run/containerd",
		l.ContainerdHosts():          "/var/lib/hakube/agent/etc/containerd/certs.d",
		l.ContainerdSocket():         "/var/lib/hakube/agent/run/containerd/containerd.sock",
		l.ContainerdLog():            "/var/lib/hakube/agent/containerd/containerd.log",
		l.Images():                   "/var/lib/hakube/agent/images",
		l.PodLogs():                  "/var/lib/hakube/agent/logs/pods",
		l.KubeletConfig():            "/var/lib/hakube/agent/etc/kubelet.yaml",
		l.CNIConf():                  "/var/lib/hakube/agent/etc/cni/net.d",
		l.CNIState():                 "/var/lib/hakube/agent/cni/networks",
		l.FlannelNetConf():           "/var/lib/hakube/agent/etc/flannel/net-conf.json",
		l.FlannelSubnet():            "/var/lib/hakube/agent/run/flannel/subnet.env",
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
}

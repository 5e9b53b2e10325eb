package runner

import (
	"net"
	"os"

	"k8s.io/klog/v2"
)

// notify tells systemd the process's state (sd_notify(3)): READY=1 once
// every component is ready, STOPPING=1 when it stops. The unit 'hakube
// install' writes is Type=notify, so 'systemctl start' returns when hakube
// is ready, not when it was forked. Without $NOTIFY_SOCKET it does nothing.
func notify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	// Go maps a leading @ to the abstract namespace, as systemd means it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		klog.Warningf("telling systemd %s through $NOTIFY_SOCKET: %v", state, err)
	}
}

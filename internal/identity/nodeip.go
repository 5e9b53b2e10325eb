package identity

import (
	"bufio"
	"net"
	"os"
	"strings"
)

// resolveNodeIP returns the given IP, else the IPv4 address of the interface
// that holds the default route, else the first global IPv4 address, else loopback.
func resolveNodeIP(given string) (net.IP, error) {
	if given != "" {
		return net.ParseIP(given), nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	defaultIface := defaultRouteInterface()
	var first net.IP
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if iface.Name == defaultIface {
				return ipn.IP, nil
			}
			if first == nil {
				first = ipn.IP
			}
		}
	}
	if first != nil {
		return first, nil
	}
	return net.IPv4(127, 0, 0, 1), nil
}

// defaultRouteInterface reads the kernel's IPv4 routing table.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 2 && fields[1] == "00000000" && fields[0] != "Iface" {
			return fields[0]
		}
	}
	return ""
}

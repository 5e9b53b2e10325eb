package loadbalancer

import (
	"context"
	"net"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

const (
	watchInterval = 15 * time.Second
	// watchTimeout bounds one list, so a request hung on a dying server
	// does not stop the list from being refreshed.
	watchTimeout = 10 * time.Second
	// watchErrorLogInterval keeps a long outage from flooding the log.
	watchErrorLogInterval = time.Minute
)

// Watch keeps the server list current until ctx ends, from the endpoints of
// the kubernetes Service: every server's apiserver is in them while it
// renews its lease. cs should go through this load balancer, so the list
// can be read while any one server is down.
func (lb *LoadBalancer) Watch(ctx context.Context, cs kubernetes.Interface) {
	var lastLog time.Time
	t := time.NewTicker(lb.watchInterval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, watchTimeout)
		servers, err := listServers(lctx, cs)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if time.Since(lastLog) >= watchErrorLogInterval {
				klog.Warningf("load balancer: listing the servers (retrying every %s): %v", lb.watchInterval, err)
				lastLog = time.Now()
			}
		case len(servers) > 0:
			// An empty list is transient (every lease expired at once, as
			// after a full cluster restart): keep the servers known so far.
			lb.SetServers(servers)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// listServers returns the sorted host:port of each ready endpoint of the
// kubernetes Service; sorted so the same servers always give the same list.
func listServers(ctx context.Context, cs kubernetes.Interface) ([]string, error) {
	list, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=kubernetes",
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, es := range list.Items {
		for _, port := range es.Ports {
			if port.Port == nil || (port.Protocol != nil && *port.Protocol != corev1.ProtocolTCP) {
				continue
			}
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, addr := range ep.Addresses {
					out = append(out, net.JoinHostPort(addr, strconv.Itoa(int(*port.Port))))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

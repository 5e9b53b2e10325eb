package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/pki"
)

var (
	certExpiryDesc = prometheus.NewDesc("hakube_certificate_expiry_seconds",
		"Seconds until the certificate expires (negative once it has); name is its path under its TLS directory.",
		[]string{"dir", "name", "ca"}, nil)
	certNearestDesc = prometheus.NewDesc("hakube_certificate_nearest_expiry_seconds",
		"Seconds until the first of this server's and its node's certificates expires: alert well before it reaches 120 days (10368000).",
		nil, nil)
)

// Certificates is a collector of the expiry of every certificate in dirs,
// read at each scrape (a renewal shows at once; a TLS directory holds a few
// dozen small files).
func Certificates(dirs ...pki.Dir) prometheus.Collector { return certCollector(dirs) }

type certCollector []pki.Dir

func (c certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- certNearestDesc
}

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	var nearest *pki.CertStatus
	for _, d := range c {
		// The state is not exported: the window does not matter.
		certs, err := pki.Check(time.Now(), pki.RenewWindow, d)
		if err != nil {
			klog.Warningf("metrics: certificates in %s: %v", d, err)
			continue
		}
		for i, s := range certs {
			ca := "false"
			if s.CA {
				ca = "true"
			}
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(s.SecondsLeft), string(d), s.Name, ca)
			if nearest == nil || s.SecondsLeft < nearest.SecondsLeft {
				nearest = &certs[i]
			}
		}
	}
	if nearest != nil {
		ch <- prometheus.MustNewConstMetric(certNearestDesc, prometheus.GaugeValue, float64(nearest.SecondsLeft))
	}
}

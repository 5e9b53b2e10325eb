package server

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/pki"
)

// certRenewer renews this server's leaf certificates while it runs, once a
// third of their life is left (120 days of a year), with their keys kept.
// No daemon restarts for it: the apiserver and the kubelet watch their files,
// embedded etcd, Dqlite's peers, the supervisor and client-go (the
// controller-manager, the scheduler, every kubeconfig) read them again at
// their next handshake. It also logs, once a day, a CA near its end.
type certRenewer struct {
	tls pki.Dir
	// adminCert is the admin certificate that writeKubeconfig embeds in
	// --write-kubeconfig's file (nil without one): it is written again when
	// the certificate is newer, renewed here or by 'hakube certificate rotate'.
	adminCert, kubeconfig string
	writeKubeconfig       func() error

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *certRenewer) Name() string { return "certificate renewal" }

func (r *certRenewer) Init(context.Context) error { return nil }

func (r *certRenewer) Start(context.Context) error {
	lt, err := pki.LeafLifetimes()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(lt.CheckEvery)
		defer t.Stop()
		// The first look is a period away: a start mints every leaf anew.
		var warned time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r.tick(lt, &warned)
		}
	}()
	return nil
}

func (r *certRenewer) tick(lt pki.Lifetimes, warned *time.Time) {
	now := time.Now()
	renewed, err := r.tls.RenewLeaves(now, lt.Window, nil)
	if err != nil {
		klog.Errorf("certificates: renewing: %v", err)
	}
	for _, c := range renewed {
		klog.Infof("certificates: renewed %s (%s), valid until %s", c.Name, c.Subject, c.NotAfter.Format(time.RFC3339))
	}
	if r.writeKubeconfig != nil && newer(r.adminCert, r.kubeconfig) {
		if err := r.writeKubeconfig(); err != nil {
			klog.Errorf("certificates: writing %s with the renewed admin certificate: %v", r.kubeconfig, err)
		} else {
			klog.Infof("certificates: wrote %s with the renewed admin certificate", r.kubeconfig)
		}
	}
	if now.Sub(*warned) < 24*time.Hour {
		return
	}
	certs, err := pki.Check(now, lt.Window, r.tls)
	if err != nil {
		klog.Errorf("certificates: %v", err)
		return
	}
	var near []string
	for _, c := range certs {
		// A leaf still due was not renewed: no CA here signed it.
		if (c.CA && c.State != pki.StateOK) || (!c.CA && c.RenewalDue(lt.Window)) {
			near = append(near, c.Name+" (until "+c.NotAfter.Format(time.RFC3339)+")")
		}
	}
	if len(near) > 0 {
		klog.Warningf("certificates: %s expire within %s and cannot be renewed in place: a CA, which lasts 10 years, "+
			"is replaced with 'hakube certificate rotate-ca'; 'hakube certificate check' lists every certificate", strings.Join(near, ", "), lt.Window)
		*warned = now
	}
}

// newer says a's file was modified after b's; false if either is missing.
func newer(a, b string) bool {
	ia, err := os.Stat(a)
	if err != nil {
		return false
	}
	ib, err := os.Stat(b)
	return err == nil && ia.ModTime().After(ib.ModTime())
}

func (r *certRenewer) Stop() error {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
	}
	return nil
}

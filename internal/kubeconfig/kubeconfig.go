// Package kubeconfig writes kubeconfig files for the admin and the control-plane
// components.
package kubeconfig

import (
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/transport"

	"github.com/hakube/hakube/internal/fsutil"
)

// Config describes one kubeconfig.
type Config struct {
	Server   string // https://host:port
	CAFile   string
	CertFile string
	KeyFile  string
	// Embed puts the certificate data in the file itself, so it can be copied elsewhere.
	Embed bool
}

// Write writes c to path atomically with the given mode.
func Write(path string, c Config, mode os.FileMode) error {
	cluster := &clientcmdapi.Cluster{Server: c.Server}
	user := &clientcmdapi.AuthInfo{}
	if c.Embed {
		var err error
		if cluster.CertificateAuthorityData, err = os.ReadFile(c.CAFile); err != nil {
			return err
		}
		if user.ClientCertificateData, err = os.ReadFile(c.CertFile); err != nil {
			return err
		}
		if user.ClientKeyData, err = os.ReadFile(c.KeyFile); err != nil {
			return err
		}
	} else {
		cluster.CertificateAuthority = c.CAFile
		user.ClientCertificate = c.CertFile
		user.ClientKey = c.KeyFile
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = cluster
	cfg.AuthInfos["default"] = user
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, data, mode)
}

// Client is a clientset from the kubeconfig at path.
func Client(path string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// FollowRenewals makes every client-go client of this process (the
// controller-manager, the scheduler, the kubelet, kube-proxy, flannel run
// in-process) close its connections within a quarter of the renewal window
// of a client certificate's renewal, at most client-go's 5 minutes. The
// apiserver and the kubelet authenticate a client certificate at every
// request, so a connection made with the old one must be gone before it
// expires; with a year's certificates this keeps client-go's default. Call
// it before any client is made.
func FollowRenewals(window time.Duration) {
	transport.CertCallbackRefreshDuration = min(transport.CertCallbackRefreshDuration, window/4)
}

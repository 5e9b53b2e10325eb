package server

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/pki"
)

// nodePasswordSuffix names the Secret in kube-system that binds a node name
// to the password of the machine that registered it first, as K3s does.
const nodePasswordSuffix = ".node-password.hakube"

// A node password is random (the node makes it), so a fast hash is enough:
// the iterations only keep a leaked Secret from being a password list.
const nodePasswordIterations = 10_000

// nodeIssuer issues the credentials of nodes that join through this server:
// certificates for keys the node keeps, once the name is proved its own.
type nodeIssuer struct {
	tls pki.Dir
	// kubeconfig reaches this server's apiserver, for the password Secrets.
	kubeconfig string
}

func (n *nodeIssuer) issue(ctx context.Context, req join.NodeRequest) (join.NodeCredentials, error) {
	if msgs := validation.IsDNS1123Subdomain(req.Name + nodePasswordSuffix); len(msgs) > 0 {
		return join.NodeCredentials{}, join.BadRequest("node name %q cannot be used: %s", req.Name, strings.Join(msgs, "; "))
	}
	var ips []net.IP
	for _, s := range req.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return join.NodeCredentials{}, join.BadRequest("node address %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return join.NodeCredentials{}, join.BadRequest("the node sent no address")
	}
	if len(req.Password) < 16 || len(req.Password) > 256 {
		return join.NodeCredentials{}, join.BadRequest("the node password must be 16 to 256 characters")
	}
	clientPub, err := pki.ParsePublicKey([]byte(req.ClientKey))
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("client key: %v", err)
	}
	servingPub, err := pki.ParsePublicKey([]byte(req.ServingKey))
	if err != nil {
		return join.NodeCredentials{}, join.BadRequest("serving key: %v", err)
	}
	if err := n.claim(ctx, req.Name, req.Password); err != nil {
		return join.NodeCredentials{}, err
	}
	var creds join.NodeCredentials
	clientCA, err := n.tls.LoadCA(pki.ClientCA)
	if err != nil {
		return creds, err
	}
	serverCA, err := n.tls.LoadCA(pki.ServerCA)
	if err != nil {
		return creds, err
	}
	client, err := clientCA.Sign(pki.Leaf{CommonName: "system:node:" + req.Name, Organization: []string{"system:nodes"}, Usage: pki.ClientAuth}, clientPub)
	if err != nil {
		return creds, err
	}
	serving, err := serverCA.Sign(pki.Leaf{CommonName: req.Name, DNSNames: []string{req.Name}, IPs: ips, Usage: pki.ServerAuth}, servingPub)
	if err != nil {
		return creds, err
	}
	creds.ClientCert, creds.ServingCert = string(client), string(serving)
	creds.ServerCA, creds.ClientCA = string(serverCA.CertPEM), string(clientCA.CertPEM)
	return creds, nil
}

// claim binds name to password in a Secret, or checks the binding that is
// there: the first machine to register a name owns it.
func (n *nodeIssuer) claim(ctx context.Context, name, password string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", n.kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	secretName := name + nodePasswordSuffix
	for {
		s, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
		if err == nil {
			salt, _ := hex.DecodeString(string(s.Data["salt"]))
			if subtle.ConstantTimeCompare([]byte(hashNodePassword(password, salt)), s.Data["hash"]) != 1 {
				return fmt.Errorf("%w: a node named %s was registered by another machine (its password differs). "+
					"Give this node another name (--node-name), or if it replaces that machine, delete the node first: "+
					"kubectl delete node %s && kubectl -n kube-system delete secret %s", join.ErrNameTaken, name, name, secretName)
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secretName},
			Data:       map[string][]byte{"hash": []byte(hashNodePassword(password, salt)), "salt": []byte(hex.EncodeToString(salt))},
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// Another request for the name got there first: check against its binding.
	}
}

func hashNodePassword(password string, salt []byte) string {
	key, _ := pbkdf2.Key(sha256.New, password, salt, nodePasswordIterations, 32)
	return hex.EncodeToString(key)
}

package controlplane

import (
	"context"
	"time"

	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/hakube/hakube/internal/pki"
)

// ControllerManagerConfig configures kube-controller-manager.
type ControllerManagerConfig struct {
	TLSDir      pki.Dir
	Kubeconfig  string
	ClusterCIDR string
	ServiceCIDR string
	// SigningDuration is the validity of what its CSR signers issue (a
	// kubelet's client certificate): hakube's own leaves' validity.
	SigningDuration time.Duration
	ExtraArgs       []string
}

// ControllerManager is the kube-controller-manager component.
//
// Upstream ends the process when its leader election stops, so it cannot be
// stopped on its own: Stop is a no-op and the controllers end with the process.
type ControllerManager struct {
	cfg ControllerManagerConfig
	run runner
}

// NewControllerManager returns the kube-controller-manager component.
func NewControllerManager(cfg ControllerManagerConfig) *ControllerManager {
	return &ControllerManager{cfg: cfg}
}

// Name implements component.Component.
func (c *ControllerManager) Name() string { return "kube-controller-manager" }

// Init implements component.Component.
func (c *ControllerManager) Init(context.Context) error { return nil }

func (c *ControllerManager) args() []string {
	t := c.cfg.TLSDir
	// The signers take the CA's certificate alone (t.Signer): a CA file is a
	// bundle during a CA rotation. The root CA file, which pods trust, is the
	// bundle.
	return append([]string{
		"--kubeconfig=" + c.cfg.Kubeconfig,
		"--authentication-kubeconfig=" + c.cfg.Kubeconfig,
		"--authorization-kubeconfig=" + c.cfg.Kubeconfig,
		"--secure-port=0",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + c.cfg.ClusterCIDR,
		"--service-cluster-ip-range=" + c.cfg.ServiceCIDR,
		"--cluster-signing-kube-apiserver-client-cert-file=" + t.Signer(pki.ClientCA),
		"--cluster-signing-kube-apiserver-client-key-file=" + t.Key(pki.ClientCA),
		"--cluster-signing-kubelet-client-cert-file=" + t.Signer(pki.ClientCA),
		"--cluster-signing-kubelet-client-key-file=" + t.Key(pki.ClientCA),
		"--cluster-signing-kubelet-serving-cert-file=" + t.Signer(pki.ServerCA),
		"--cluster-signing-kubelet-serving-key-file=" + t.Key(pki.ServerCA),
		"--cluster-signing-legacy-unknown-cert-file=" + t.Signer(pki.ServerCA),
		"--cluster-signing-legacy-unknown-key-file=" + t.Key(pki.ServerCA),
		"--cluster-signing-duration=" + c.cfg.SigningDuration.String(),
		"--configure-cloud-routes=false",
		"--controllers=*,token-cleaner-controller",
		"--leader-elect=true",
		"--profiling=false",
		"--root-ca-file=" + t.Cert(pki.ServerCA),
		"--service-account-private-key-file=" + t.Path(pki.ServiceKey),
		"--use-service-account-credentials=true",
	}, c.cfg.ExtraArgs...)
}

// Start runs the controller manager in the background.
func (c *ControllerManager) Start(context.Context) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	sets := s.Flags(kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases())
	s.ParsedFlags = &sets
	if err := parseFlags("kube-controller-manager", sets, c.args()); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	c.run.start(func(ctx context.Context) error {
		cfg, err := s.Config(ctx, kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases())
		if err != nil {
			return err
		}
		c.run.accepted()
		return kcm.Run(ctx, cfg.Complete())
	})
	return nil
}

// Ready returns once the controller manager accepted its configuration (a
// running one may be waiting for leadership, which is not a failure). It
// used to wait 2 s for an early exit instead; with the scheduler's, that
// was half of a cold start (bench: 7-9 s). Failed reports a later exit.
func (c *ControllerManager) Ready(ctx context.Context) error { return c.run.startupError(ctx) }

// Failed implements component.Failer.
func (c *ControllerManager) Failed() <-chan error { return c.run.failed() }

// Stop implements component.Component; see the type's comment.
func (c *ControllerManager) Stop() error { return nil }

// SchedulerConfig configures kube-scheduler.
type SchedulerConfig struct {
	Kubeconfig string
	ExtraArgs  []string
}

// Scheduler is the kube-scheduler component. Like the controller manager it ends
// the process when its leader election stops, so Stop is a no-op.
type Scheduler struct {
	cfg SchedulerConfig
	run runner
}

// NewScheduler returns the kube-scheduler component.
func NewScheduler(cfg SchedulerConfig) *Scheduler { return &Scheduler{cfg: cfg} }

// Name implements component.Component.
func (s *Scheduler) Name() string { return "kube-scheduler" }

// Init implements component.Component.
func (s *Scheduler) Init(context.Context) error { return nil }

// Start runs the scheduler in the background.
func (s *Scheduler) Start(context.Context) error {
	opts := scheduleroptions.NewOptions()
	args := append([]string{
		"--kubeconfig=" + s.cfg.Kubeconfig,
		"--authentication-kubeconfig=" + s.cfg.Kubeconfig,
		"--authorization-kubeconfig=" + s.cfg.Kubeconfig,
		"--secure-port=0",
		"--leader-elect=true",
		"--profiling=false",
	}, s.cfg.ExtraArgs...)
	if err := parseFlags("kube-scheduler", *opts.Flags, args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	s.run.start(func(ctx context.Context) error {
		cc, sched, err := scheduler.Setup(ctx, opts)
		if err != nil {
			return err
		}
		s.run.accepted()
		return scheduler.Run(ctx, cc, sched)
	})
	return nil
}

// Ready returns once the scheduler accepted its configuration.
func (s *Scheduler) Ready(ctx context.Context) error { return s.run.startupError(ctx) }

// Failed implements component.Failer.
func (s *Scheduler) Failed() <-chan error { return s.run.failed() }

// Stop implements component.Component; see the type's comment.
func (s *Scheduler) Stop() error { return nil }

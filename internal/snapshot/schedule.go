package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore/local"
)

// SchedulerConfig configures scheduled snapshots.
type SchedulerConfig struct {
	// Schedule is a cron expression (five fields, or @every 1h and the like).
	Schedule  string
	Retention int
	Dir       Dir
	Server    local.Datastore
	// S3, when enabled, receives a copy of each snapshot, with the same
	// retention applied to this node's scheduled ones there.
	S3 S3Config
}

// Validate checks the schedule and the retention.
func (c SchedulerConfig) Validate() error {
	if _, err := cron.ParseStandard(c.Schedule); err != nil {
		return fmt.Errorf("--etcd-snapshot-schedule-cron %q: %v (for example \"0 */12 * * *\")", c.Schedule, err)
	}
	if c.Retention < 1 {
		return fmt.Errorf("--etcd-snapshot-retention %d: keep at least 1 snapshot", c.Retention)
	}
	return c.S3.Validate()
}

// Scheduler is the component that takes snapshots on schedule and prunes
// all but the newest Retention.
type Scheduler struct {
	cfg  SchedulerConfig
	cron *cron.Cron
}

// NewScheduler returns the component.
func NewScheduler(cfg SchedulerConfig) *Scheduler { return &Scheduler{cfg: cfg} }

func (s *Scheduler) Name() string               { return "scheduled snapshots" }
func (s *Scheduler) Init(context.Context) error { return s.cfg.Validate() }

func (s *Scheduler) Start(context.Context) error {
	s.cron = cron.New()
	if _, err := s.cron.AddFunc(s.cfg.Schedule, s.take); err != nil {
		return err
	}
	s.cron.Start()
	klog.Infof("snapshots: scheduled %q into %s, keeping %d", s.cfg.Schedule, s.cfg.Dir, s.cfg.Retention)
	return nil
}

// Stop waits for a snapshot in progress, up to a minute.
func (s *Scheduler) Stop() error {
	if s.cron == nil {
		return nil
	}
	select {
	case <-s.cron.Stop().Done():
	case <-time.After(time.Minute):
	}
	return nil
}

// scheduledPrefix starts the names of a node's scheduled snapshots.
func scheduledPrefix(node string) string { return "etcd-snapshot-" + node + "-" }

func (s *Scheduler) take() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m, err := Take(ctx, s.cfg.Server, s.cfg.Dir, "etcd-snapshot", false)
	if err != nil {
		klog.Warningf("snapshots: scheduled snapshot skipped: %v", err)
		return
	}
	klog.Infof("snapshots: saved %s (%d bytes, sha256 %s)", m.Name, m.Size, m.SHA256)
	// Only this node's scheduled snapshots count: on-demand ones stay.
	gone, err := s.cfg.Dir.Prune(scheduledPrefix(m.Node), s.cfg.Retention)
	if err != nil {
		klog.Warningf("snapshots: pruning: %v", err)
	} else if len(gone) > 0 {
		klog.Infof("snapshots: pruned %v (retention %d)", gone, s.cfg.Retention)
	}
	if s.cfg.S3.Enabled {
		s.copyToS3(ctx, m)
	}
}

// copyToS3 uploads a scheduled snapshot and applies the retention to this
// node's scheduled snapshots in the store; a failure is logged, the local
// snapshot stays.
func (s *Scheduler) copyToS3(ctx context.Context, m Meta) {
	store, err := NewS3(ctx, s.cfg.S3)
	if err == nil {
		m, err = store.Upload(ctx, s.cfg.Dir, m)
	}
	if err != nil {
		klog.Warningf("snapshots: copy of %s to S3 failed (the local copy is kept): %v", m.Name, err)
		return
	}
	klog.Infof("snapshots: copied %s to %s", m.Name, m.Location)
	gone, err := store.Prune(ctx, scheduledPrefix(m.Node), s.cfg.Retention)
	if err != nil {
		klog.Warningf("snapshots: pruning S3: %v", err)
	} else if len(gone) > 0 {
		klog.Infof("snapshots: pruned %v from S3 (retention %d)", gone, s.cfg.Retention)
	}
}

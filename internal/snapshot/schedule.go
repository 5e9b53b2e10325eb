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
}

// Validate checks the schedule and the retention.
func (c SchedulerConfig) Validate() error {
	if _, err := cron.ParseStandard(c.Schedule); err != nil {
		return fmt.Errorf("--etcd-snapshot-schedule-cron %q: %v (for example \"0 */12 * * *\")", c.Schedule, err)
	}
	if c.Retention < 1 {
		return fmt.Errorf("--etcd-snapshot-retention %d: keep at least 1 snapshot", c.Retention)
	}
	return nil
}

// Scheduler is the component that takes snapshots on schedule and prunes
// all but the newest Retention.
type Scheduler struct {
	cfg  SchedulerConfig
	cron *cron.Cron
}

// NewScheduler returns the component.
func NewScheduler(cfg SchedulerConfig) *Scheduler { return &Scheduler{cfg: cfg} }

func (s *Scheduler) Name() string                { return "scheduled snapshots" }
func (s *Scheduler) Init(context.Context) error  { return s.cfg.Validate() }
func (s *Scheduler) Ready(context.Context) error { return nil }

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

func (s *Scheduler) take() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m, err := Take(ctx, s.cfg.Server, s.cfg.Dir, "etcd-snapshot", false)
	if err != nil {
		klog.Warningf("snapshots: scheduled snapshot skipped: %v", err)
		return
	}
	klog.Infof("snapshots: saved %s (%d bytes, sha256 %s)", m.Name, m.Size, m.SHA256)
	gone, err := s.cfg.Dir.Prune(s.cfg.Retention)
	if err != nil {
		klog.Warningf("snapshots: pruning: %v", err)
	} else if len(gone) > 0 {
		klog.Infof("snapshots: pruned %v (retention %d)", gone, s.cfg.Retention)
	}
}

package etcd

import (
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
)

func TestApplyArgs(t *testing.T) {
	cfg := embed.NewConfig()
	err := applyArgs(cfg, []string{"quota-backend-bytes=4294967296", "--snapshot-count=5000", "auto-compaction-retention=1", "max-txn-ops=256"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QuotaBackendBytes != 4294967296 || cfg.SnapshotCount != 5000 || cfg.AutoCompactionRetention != "1" || cfg.MaxTxnOps != 256 {
		t.Fatalf("settings not applied: quota %d, snapshot-count %d, retention %q, max-txn-ops %d",
			cfg.QuotaBackendBytes, cfg.SnapshotCount, cfg.AutoCompactionRetention, cfg.MaxTxnOps)
	}
	for arg, want := range map[string]string{
		"no-such-setting=1":   "unknown field",
		"quota-backend-bytes": "use key=value",
		"snapshot-count=many": "snapshot-count",
		"=5":                  "use key=value",
	} {
		if err := applyArgs(embed.NewConfig(), []string{arg}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one saying %q", arg, err, want)
		}
	}
}

func TestShouldDefrag(t *testing.T) {
	for _, c := range []struct {
		size, inUse int64
		want        bool
	}{
		{1 << 30, 1 << 30, false},   // nothing free
		{1 << 30, 400 << 20, true},  // 60 % free, 624 MiB
		{1 << 30, 600 << 20, false}, // 41 % free
		{100 << 20, 10 << 20, true}, // 90 % free, 90 MiB
		{40 << 20, 1 << 20, false},  // 97 % free but only 39 MiB
		{128 << 20, 64 << 20, true}, // exactly half, exactly 64 MiB
	} {
		if got := shouldDefrag(c.size, c.inUse); got != c.want {
			t.Errorf("size %d, in use %d: %v, want %v", c.size, c.inUse, got, c.want)
		}
	}
}

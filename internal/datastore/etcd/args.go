package etcd

import (
	"fmt"
	"strings"

	"go.etcd.io/etcd/server/v3/embed"
	"sigs.k8s.io/yaml"
)

// ValidateArgs checks key=value etcd settings without starting anything.
func ValidateArgs(args []string) error {
	return applyArgs(embed.NewConfig(), args)
}

// applyArgs sets key=value settings on cfg through the keys of etcd's
// configuration file, so every setting etcd documents there can be passed
// and a misspelt one is refused rather than ignored. Settings hakube owns
// (URLs, TLS, the data directory, cluster membership) are not in that form.
func applyArgs(cfg *embed.Config, args []string) error {
	for _, a := range args {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || k == "" {
			return fmt.Errorf("--etcd-arg %q: use key=value, as in etcd's configuration file (quota-backend-bytes=4294967296)", a)
		}
		// The value as YAML types it (numbers, booleans); a string setting
		// whose value looks like a number (auto-compaction-retention=1) is
		// tried again as a string.
		err := yaml.UnmarshalStrict([]byte(k+": "+v), cfg)
		if err != nil {
			quoted := "'" + strings.ReplaceAll(v, "'", "''") + "'"
			if yaml.UnmarshalStrict([]byte(k+": "+quoted), cfg) == nil {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("--etcd-arg %q: %v (keys are those of etcd's configuration file)", a, err)
		}
	}
	return nil
}

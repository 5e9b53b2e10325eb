package cli

import (
	"slices"
	"strings"
	"testing"
)

func TestServiceFlagsKeepTokensOutOfTheUnit(t *testing.T) {
	t.Setenv("HAKUBE_TOKEN", "")
	t.Setenv("K3S_TOKEN", "")
	args, token, agentToken, err := serviceFlags("server", []string{"--cluster-init", "-t", "one", "--agent-token=two", "--token-file", "/etc/t", "--node-label", "a=b"})
	if err != nil {
		t.Fatal(err)
	}
	if token != "one" || agentToken != "two" {
		t.Fatalf("tokens %q %q, want one two", token, agentToken)
	}
	if want := []string{"--cluster-init", "--token-file", "/etc/t", "--node-label", "a=b"}; !slices.Equal(args, want) {
		t.Fatalf("args %q, want %q", args, want)
	}
	for _, form := range [][]string{{"--token", "x"}, {"--token=x"}, {"-tx"}, {"-t=x"}} {
		args, token, _, err := serviceFlags("agent", append([]string{"--server", "https://s:6443"}, form...))
		if err != nil || token != "x" || !slices.Equal(args, []string{"--server", "https://s:6443"}) {
			t.Fatalf("%q: args %q, token %q, %v", form, args, token, err)
		}
	}
	t.Setenv("K3S_TOKEN", "from-env")
	if _, token, _, _ := serviceFlags("agent", []string{"--server", "https://s:6443"}); token != "from-env" {
		t.Fatalf("token %q, want K3S_TOKEN's", token)
	}
}

func TestServiceFlagsRefuseWhatTheServiceWouldRefuse(t *testing.T) {
	for _, c := range []struct {
		role  string
		flags []string
		want  string
	}{
		{"server", []string{"--cluster-inti"}, "unknown flag: --cluster-inti"},
		{"agent", []string{"--cluster-init"}, "unknown flag: --cluster-init"},
		{"server", []string{"extra"}, "takes flags only"},
		{"node", nil, "give server or agent"},
	} {
		if _, _, _, err := serviceFlags(c.role, c.flags); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serviceFlags(%s, %q) = %v, want %q", c.role, c.flags, err, c.want)
		}
	}
}

package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sampleJunit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1">
  <testsuite name="Kubernetes e2e suite" tests="4" failures="1" skipped="1">
    <testcase name="[SynchronizedBeforeSuite]" status="passed" time="1.0"></testcase>
    <testcase name="[It] [sig-node] Pods should be submitted and removed [Conformance]" status="passed" time="8.2"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for services [Conformance]" status="failed" time="300">
      <failure message="timed out waiting for the condition&#xA;more detail" type="failed">stack</failure>
    </testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" status="failed" time="5">
      <failure message="" type="failed">[FAILED] endpoints not ready&#xA;In [It] at: service.go:1</failure>
    </testcase>
    <testcase name="[It] [sig-apps] Job should run a job [Slow]" status="skipped"><skipped message="skipped"/></testcase>
  </testsuite>
</testsuites>`

func TestParseJunit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junit_01.xml")
	if err := os.WriteFile(p, []byte(sampleJunit), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := parseJunit(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Passed != 1 || len(r.Failed) != 2 || r.Total() != 3 {
		t.Fatalf("passed %d failed %d total %d, want 1 2 3", r.Passed, len(r.Failed), r.Total())
	}
	if f := r.Failed[0]; !strings.Contains(f.Name, "DNS should provide") || firstLine(f.Reason) != "timed out waiting for the condition" {
		t.Fatalf("failure %+v", f)
	}
	// e2e.test's own reports: an empty message, the reason in the body.
	if f := r.Failed[1]; !strings.Contains(f.Name, "basic endpoint") || firstLine(f.Reason) != "[FAILED] endpoints not ready" {
		t.Fatalf("failure %+v", f)
	}
	if got, want := r.FailedList(), "[sig-network] DNS should provide DNS for services [Conformance]\n[sig-network] Services should serve a basic endpoint from pods [Conformance]\n"; got != want {
		t.Fatalf("failed list %q, want %q", got, want)
	}
	if _, err := parseJunit(filepath.Join(t.TempDir(), "none.xml")); err == nil {
		t.Fatal("a missing report parsed")
	}
}

func TestUpdateDocKeepsOtherRuns(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "conformance.md")
	if err := os.WriteFile(doc, []byte("# Conformance\n\nintro\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, passed int) {
		r := &result{Name: name, Datastore: name, Focus: "`\\[Conformance\\]`", Duration: time.Hour, Passed: passed}
		if err := r.UpdateDoc(doc, "/x/conformance/results/"+name); err != nil {
			t.Fatal(err)
		}
	}
	run("etcd", 400)
	run("dqlite", 401)
	run("etcd", 462)
	b, _ := os.ReadFile(doc)
	s := string(b)
	if strings.Count(s, "<!-- run:etcd -->") != 1 || strings.Count(s, "<!-- run:dqlite -->") != 1 {
		t.Fatalf("sections duplicated or lost:\n%s", s)
	}
	if !strings.Contains(s, "**462 passed, 0 failed**") || strings.Contains(s, "**400 passed") || !strings.Contains(s, "**401 passed") {
		t.Fatalf("etcd's section not replaced, or dqlite's lost:\n%s", s)
	}
	if !strings.HasPrefix(s, "# Conformance\n\nintro\n") || strings.Index(s, "run:etcd") > strings.Index(s, "run:dqlite") {
		t.Fatalf("the document's order changed:\n%s", s)
	}
}

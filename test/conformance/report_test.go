package conformance

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// result is one run of the suite, from its junit report.
type result struct {
	Name, Datastore, Fault string
	Focus, Skip            string
	Duration               time.Duration
	Passed                 int
	Failed                 []failure
	Kills, NotReady        []string
}

type failure struct{ Name, Reason string }

func (r *result) Total() int { return r.Passed + len(r.Failed) }

type junitCase struct {
	Name    string `xml:"name,attr"`
	Status  string `xml:"status,attr"`
	Failure *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Error *struct {
		Message string `xml:"message,attr"`
	} `xml:"error"`
	Skipped *struct{} `xml:"skipped"`
}

// parseJunit reads ginkgo's junit report: a spec that ran either passed or
// failed (with its reason); skipped specs (outside the focus) are not counted.
// A failed suite node ([SynchronizedBeforeSuite], ...) counts as a failure.
func parseJunit(path string) (*result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := &result{}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			switch {
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
			case c.Failure != nil || c.Error != nil || (c.Status != "" && c.Status != "passed"):
				reason := c.Status
				if c.Failure != nil {
					// e2e.test leaves the message empty and puts the
					// failure's text, from its [FAILED] line, in the body.
					reason = c.Failure.Message
					if reason == "" {
						reason = strings.TrimSpace(c.Failure.Text)
					}
				} else if c.Error != nil {
					reason = c.Error.Message
				}
				r.Failed = append(r.Failed, failure{Name: c.Name, Reason: reason})
			case strings.HasPrefix(c.Name, "[It]"):
				r.Passed++
			}
		}
	}
	sort.Slice(r.Failed, func(i, j int) bool { return r.Failed[i].Name < r.Failed[j].Name })
	return r, nil
}

// Markdown is the run's summary: figures, then each failure with its reason.
func (r *result) Markdown() string {
	var b strings.Builder
	fault := "none"
	if r.Fault != "" {
		fault = r.Fault
	}
	fmt.Fprintf(&b, "- datastore: %s; fault: %s; focus %s", r.Datastore, fault, r.Focus)
	if r.Skip != "" {
		fmt.Fprintf(&b, "; skip `%s`", r.Skip)
	}
	fmt.Fprintf(&b, "\n- **%d passed, %d failed** of %d specs run, in %s\n", r.Passed, len(r.Failed), r.Total(), r.Duration.Round(time.Second))
	if len(r.Kills) > 0 {
		fmt.Fprintf(&b, "- %d leader kills:\n", len(r.Kills))
		for _, k := range r.Kills {
			fmt.Fprintf(&b, "  - %s\n", k)
		}
	}
	if len(r.NotReady) == 0 {
		b.WriteString("- the agent's node was Ready at every check (every 10 s)\n")
	} else {
		fmt.Fprintf(&b, "- the agent's node was **not Ready** at %d checks: %s\n", len(r.NotReady), strings.Join(r.NotReady, "; "))
	}
	if len(r.Failed) > 0 {
		b.WriteString("\n| failed spec | reason (first line) |\n|---|---|\n")
		for _, f := range r.Failed {
			fmt.Fprintf(&b, "| %s | %s |\n", escapeCell(f.Name), escapeCell(firstLine(f.Reason)))
		}
	}
	return b.String()
}

// FailedList names the failed specs one per line, as FOCUS_FILE takes them.
func (r *result) FailedList() string {
	var b strings.Builder
	for _, f := range r.Failed {
		// junit puts ginkgo's [It] first; the spec's text has none.
		fmt.Fprintln(&b, strings.TrimPrefix(f.Name, "[It] "))
	}
	return b.String()
}

func escapeCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

var sectionRE = regexp.MustCompile(`(?s)<!-- run:([a-z0-9-]+) -->.*?<!-- end:([a-z0-9-]+) -->\n?`)

// UpdateDoc rewrites this run's section of the summary document (between
// <!-- run:NAME --> and <!-- end:NAME -->), appending it if it is new; other
// runs' sections stay as they are.
func (r *result) UpdateDoc(path, results string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rel := results
	if wd, err := os.Getwd(); err == nil {
		// The test runs in test/conformance; the doc names paths from the repository root.
		if p, err := filepath.Rel(filepath.Join(wd, "..", ".."), results); err == nil {
			rel = p
		}
	}
	section := fmt.Sprintf("<!-- run:%s -->\n### %s, %s\n\nResults: `%s` (e2e.log, junit_01.xml).\n\n%s<!-- end:%s -->\n",
		r.Name, r.Name, time.Now().Format("2006-01-02"), rel, r.Markdown(), r.Name)
	doc, found := string(b), false
	doc = sectionRE.ReplaceAllStringFunc(doc, func(m string) string {
		if sectionRE.FindStringSubmatch(m)[1] != r.Name {
			return m
		}
		found = true
		return section
	})
	if !found {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// progressLine counts the specs e2e.log reports finished so far.
func progressLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	passed, failed := 0, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "• [FAILED]"), strings.HasPrefix(l, "• [PANICKED]"), strings.HasPrefix(l, "• [TIMEDOUT]"):
			failed++
		case strings.HasPrefix(l, "• ["):
			passed++
		}
	}
	return fmt.Sprintf("%d specs passed, %d failed so far", passed, failed)
}

package cluster_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	"canopy/mesh/soak"
)

// TestClusterChurnSoakShort runs `client soak` briefly (scripts/soak.sh
// runs it for 10 minutes): 3 servers, a source, 8 real viewers (some
// forwarding) that join, leave and crash for 30 s at 100 %/min. The soak
// fails itself (non-zero) on a viewer without frames for 10 s, a peer
// without a parent once the churn stops, or a server's goroutines or RSS
// growing; the test also checks that the churn happened and the figures
// are there.
func TestClusterChurnSoakShort(t *testing.T) {
	t.Parallel() // beside the other parallel one, after the serial tests: the package's time
	server, client := binaries(t)
	dir, err := os.MkdirTemp("", "canopy-soak-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	cmd := exec.Command(client, "soak", "-server-bin", server, "-peers", "8", "-duration", "30s", "-churn", "100%/min",
		"-sample-every", "5s", "-dir", dir, "-json", "-quiet")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var rep soak.Report
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("client soak: %v, no report (%v)\n%s", err, jerr, tail(errOut.Bytes(), 3000))
	}
	rep.Print(testWriter{t})
	if err != nil {
		t.Errorf("client soak: %v\n%s", err, tail(errOut.Bytes(), 2000))
	}
	if rep.Crashes == 0 || rep.Leaves == 0 || rep.Joins < 8+rep.Crashes+rep.Leaves {
		t.Errorf("churn: %d joins, %d leaves, %d crashes; want both kinds of departure, each replaced", rep.Joins, rep.Leaves, rep.Crashes)
	}
	if rep.FramesExpected == 0 || float64(rep.Frames) < 0.9*float64(rep.FramesExpected) {
		t.Errorf("frames: %d of %d expected", rep.Frames, rep.FramesExpected)
	}
	if len(rep.Samples) < 4 || len(rep.IdleAfter.Goroutines) != 3 || rep.RampEnd.RSSMB[0] == 0 {
		t.Errorf("samples missing: %+v", rep.Samples)
	}
}

// testWriter writes lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

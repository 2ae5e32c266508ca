package cluster_test

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clientResumedOn reports whether a client's log (-log-level info) says
// its node resumed on server url.
func clientResumedOn(log []byte, url string) bool {
	return regexp.MustCompile(`(?m)msg=resumed .*server=` + regexp.QuoteMeta(url) + `( |$)`).Match(log)
}

// TestClusterStoppedServerPeersMove: SIGSTOP server 1, the stream's owner
// and the edge of its source (-server s1,s2) and of a viewer (-server
// s1,s3). A stopped server closes nothing: its sockets stay open and the
// kernel acknowledges what the peers write, so only silence tells. The
// source and that viewer notice it (no pong for mesh's silenceTimeout)
// and resume on the next server of their lists with their tokens, while
// another server takes the stream over; they stay there past the resume
// grace (the place of a peer still waiting at a stopped edge would have
// been removed then), the tree keeps every edge, no viewer changes parent
// and none sees a larger frame gap. On SIGCONT server 1 fences itself and
// finds its old sockets closed; nothing of that reaches the tree.
// localPeer finds a peer of server 1 (its ids start with the server's) in
// a line of its log.
var localPeer = regexp.MustCompile(`peer=(s1-[0-9a-f]+)`)

func TestClusterStoppedServerPeersMove(t *testing.T) {
	t.Parallel() // beside the other parallel one, after the serial tests: the package's time
	servers := startCluster(t, 3)
	_, client := binaries(t)
	const stream = "stopped"
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	source := sourceAndRelay(t, servers, client, stream, s1+","+s2, 1, 6, "-log-level", "info")
	// 45 s of frames: the stop lands after 8 s, the peers resume 6-10 s
	// later (6 s of silence, then the takeover), server 1 stays stopped
	// for the grace after that, and the viewers must still be playing 5 s
	// after its SIGCONT (35 s ran out 4.1 s after it once, at a resume
	// of 9.6 s on a loaded machine).
	const frames = 1350
	started := time.Now()
	watch := func(name, list string) *proc {
		return start(t, name, client, "watch", "-server", list, "-stream", stream, "-frames", fmt.Sprint(frames),
			"-json", "-timeout", "180s", "-loopback-only", "-log-level", "info")
	}
	viewers := []*proc{watch("viewer1", s1+","+s3), watch("viewer2", s2+","+s3), watch("viewer3", s3+","+s2)}
	var before map[string]string
	waitFor(t, 60*time.Second, "three viewers under the relay, playing", func() bool {
		nodes, _ := treeAt(s1, stream)
		before = parents(nodes)
		under := 0
		for _, n := range nodes {
			if n.Role == "viewer" && strings.HasPrefix(n.Parent, "s3-") {
				under++
			}
		}
		return under == 3 && liveViewers(s1, stream) == 3
	})
	for time.Since(started) < 8*time.Second { // a baseline of frame gaps
		time.Sleep(100 * time.Millisecond)
	}
	servers[0].signal(syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, 40*time.Second, "the source resumed on server 2, viewer 1 on server 3", func() bool {
		return clientResumedOn(source.output(), s2) && clientResumedOn(viewers[0].output(), s3)
	})
	moved := time.Since(stopped)
	var owner *server
	waitFor(t, 30*time.Second, "a new owner", func() bool {
		for _, s := range servers[1:] {
			if ownerAt(s.url, stream) == s.id {
				owner = s
				return true
			}
		}
		return false
	})
	t.Logf("server 1 stopped: the source and viewer 1 resumed elsewhere after %v; %s owns the stream",
		moved.Round(time.Millisecond), owner.id)
	kept := func(when string) {
		t.Helper()
		var nodes []treeNode
		// The owner may be slow to answer on a loaded machine (503 after 2 s): a failed read is not a moved tree.
		waitFor(t, 30*time.Second, "the tree from the new owner", func() bool {
			var ok bool
			nodes, ok = treeAt(owner.url, stream)
			return ok
		})
		if after := parents(nodes); !sameMap(before, after) {
			t.Errorf("%s: the tree moved: before %v, after %v", when, before, after)
		}
	}
	// Past the grace (10 s) from the takeover: a peer still waiting on the
	// stopped server would lose its place now.
	for time.Since(stopped) < moved+12*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	kept("server 1 stopped past the grace")
	off := len(servers[0].output())
	servers[0].signal(syscall.SIGCONT)
	waitFor(t, 30*time.Second, "server 1 fenced and forwarding to the new owner", func() bool {
		_, fenced := logTime(servers[0].output(), "lease lost; fenced")
		return fenced && ownerAt(s1, stream) == owner.id
	})
	// Its old sockets to the source and viewer 1 are closed (the peers
	// closed them when they went): it sees that now, and must not act on
	// it. Whether it suspends them (it read the sockets' end before its
	// lease renewal fenced it) or lets them go (after), nothing of it is
	// published: the tree is checked below.
	waitFor(t, 30*time.Second, "server 1 seeing its old sockets closed", func() bool {
		ended := make(map[string]bool)
		for _, line := range strings.Split(string(servers[0].output()[off:]), "\n") {
			if m := localPeer.FindStringSubmatch(line); m != nil &&
				(strings.Contains(line, "peer suspended") || strings.Contains(line, `reason="connection closed"`)) {
				ended[m[1]] = true
			}
		}
		return len(ended) == 2
	})
	kept("after SIGCONT")
	cont := time.Now()
	(&ownerTree{viewers: viewers, started: started}).gaps(t, stopped, frames)
	if time.Since(cont) < 5*time.Second {
		t.Errorf("the viewers ended %v after SIGCONT: too soon to show it broke nothing", time.Since(cont).Round(time.Millisecond))
	}
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Headless Firefox driven over WebDriver BiDi, from Go: a second real
// browser for the mixed-browser tests. Firefox speaks BiDi natively on
// --remote-debugging-port (its CDP is gone), so the tests need no Node and
// no driver download; what they use is four commands (session.new,
// browsingContext.getTree/navigate, script.evaluate) and the log events.

// firefoxPrefs are the profile preferences FIELD-NOTES verified for WebRTC
// on loopback: grant media permission with fake devices (Firefox then lists
// lo and emits plain 127.0.0.1 host candidates, as Chromium does with
// --use-fake-ui-for-media-stream), allow autoplay, and keep host addresses
// unobfuscated (no .local names, which nothing resolves here).
var firefoxPrefs = map[string]any{
	"media.navigator.permission.disabled":               true,
	"media.navigator.streams.fake":                      true,
	"media.autoplay.default":                            0,
	"media.autoplay.blocking_policy":                    0,
	"media.peerconnection.ice.loopback":                 true,
	"media.peerconnection.ice.obfuscate_host_addresses": false,
	"browser.shell.checkDefaultBrowser":                 false,
	"datareporting.policy.dataSubmissionEnabled":        false,
	"app.update.disabledForTesting":                     true,
}

// firefoxStartTimeout bounds a Firefox start (it prints the BiDi address
// after ~1-3 s here; much longer on a busy 2-core machine).
const firefoxStartTimeout = 60 * time.Second

// bidiCallTimeout bounds one BiDi command: navigation waits for the page,
// and session.new for the browser to be ready, which took over 30 s once
// with the shared 2-core machine at a load average of 40.
const bidiCallTimeout = 90 * time.Second

// errFirefoxGone is returned by calls on a Firefox whose connection ended.
var errFirefoxGone = errors.New("firefox: the BiDi connection is closed")

var bidiAddress = regexp.MustCompile(`WebDriver BiDi listening on (ws://\S+)`)

// firefoxPath finds a Firefox to drive. Without one the mixed-browser tests
// skip on a developer's machine and fail in CI (CI=true), where .ci/run
// installs firefox-esr.
func firefoxPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Firefox found; CI must install it (.ci/run installs firefox-esr)")
	}
	t.Skip("no Firefox found; install firefox-esr to run the mixed-browser tests")
	return ""
}

// firefox is one headless Firefox process with one tab, driven over BiDi.
type firefox struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	conn    *websocket.Conn
	context string // the tab's browsing context id

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  int
	waiting map[int]chan bidiMessage
	closed  chan struct{}
	done    atomic.Bool // the test is over: log nothing more
}

// bidiMessage is a command's response or an event.
type bidiMessage struct {
	ID      *int            `json:"id"`
	Type    string          `json:"type"` // success, error, event
	Method  string          `json:"method"`
	Result  json.RawMessage `json:"result"`
	Params  json.RawMessage `json:"params"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
}

// newFirefox starts a headless Firefox with a fresh profile and opens its
// BiDi session; name prefixes what its console says in the test log.
func newFirefox(t *testing.T, name string) *firefox {
	t.Helper()
	bin := firefoxPath(t)
	profile := filepath.Join(t.TempDir(), "profile")
	if err := os.MkdirAll(profile, 0o755); err != nil {
		t.Fatal(err)
	}
	var prefs strings.Builder
	for k, v := range firefoxPrefs {
		fmt.Fprintf(&prefs, "user_pref(%q, %v);\n", k, v)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port", "0", "about:blank")
	cmd.Env = append(os.Environ(), "MOZ_HEADLESS=1", "MOZ_CRASHREPORTER_DISABLE=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start firefox: %v", err)
	}
	f := &firefox{t: t, name: name, cmd: cmd, waiting: map[int]chan bidiMessage{}, closed: make(chan struct{})}
	t.Cleanup(f.close)

	addr := make(chan string, 1)
	go func() {
		// Read stderr to its end: a full pipe would block Firefox.
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := bidiAddress.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
		}
	}()
	var ws string
	select {
	case ws = <-addr:
	case <-time.After(firefoxStartTimeout):
		t.Fatalf("firefox %s printed no BiDi address within %s", name, firefoxStartTimeout)
	}
	conn, _, err := websocket.DefaultDialer.Dial(ws+"/session", nil)
	if err != nil {
		t.Fatalf("connect to firefox %s over BiDi: %v", name, err)
	}
	f.conn = conn
	go f.read()

	if _, err := f.call("session.new", map[string]any{"capabilities": map[string]any{}}); err != nil {
		t.Fatalf("firefox %s: session.new: %v", name, err)
	}
	if _, err := f.call("session.subscribe", map[string]any{"events": []string{"log.entryAdded"}}); err != nil {
		t.Fatalf("firefox %s: subscribe to its console: %v", name, err)
	}
	raw, err := f.call("browsingContext.getTree", map[string]any{})
	if err != nil {
		t.Fatalf("firefox %s: getTree: %v", name, err)
	}
	var tree struct {
		Contexts []struct {
			Context string `json:"context"`
		} `json:"contexts"`
	}
	if err := json.Unmarshal(raw, &tree); err != nil || len(tree.Contexts) == 0 {
		t.Fatalf("firefox %s has no tab (%s): %v", name, raw, err)
	}
	f.context = tree.Contexts[0].Context
	return f
}

// read dispatches responses to their callers and logs the console's
// warnings and errors, until the connection ends.
func (f *firefox) read() {
	defer close(f.closed)
	for {
		_, data, err := f.conn.ReadMessage()
		if err != nil {
			return
		}
		var m bidiMessage
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m.ID != nil {
			f.mu.Lock()
			ch := f.waiting[*m.ID]
			delete(f.waiting, *m.ID)
			f.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		if m.Method == "log.entryAdded" {
			f.logEntry(m.Params)
		}
	}
}

func (f *firefox) logEntry(params json.RawMessage) {
	var e struct {
		Level string `json:"level"`
		Text  string `json:"text"`
		Type  string `json:"type"`
	}
	if json.Unmarshal(params, &e) != nil || e.Level == "debug" || f.done.Load() {
		return
	}
	f.t.Logf("%s %s.%s: %s", f.name, e.Type, e.Level, e.Text)
}

// call sends one command and waits for its result.
func (f *firefox) call(method string, params any) (json.RawMessage, error) {
	f.mu.Lock()
	f.nextID++
	id := f.nextID
	ch := make(chan bidiMessage, 1)
	f.waiting[id] = ch
	f.mu.Unlock()
	defer func() { f.mu.Lock(); delete(f.waiting, id); f.mu.Unlock() }()

	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	f.writeMu.Lock()
	f.conn.SetWriteDeadline(time.Now().Add(bidiCallTimeout))
	err = f.conn.WriteMessage(websocket.TextMessage, msg)
	f.writeMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("firefox: send %s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Type == "error" {
			return nil, fmt.Errorf("firefox: %s: %s: %s", method, m.Error, m.Message)
		}
		return m.Result, nil
	case <-f.closed:
		return nil, errFirefoxGone
	case <-time.After(bidiCallTimeout):
		return nil, fmt.Errorf("firefox: %s: no answer within %s", method, bidiCallTimeout)
	}
}

// navigate loads url in the tab and waits until its document is parsed.
func (f *firefox) navigate(url string) error {
	_, err := f.call("browsingContext.navigate", map[string]any{"context": f.context, "url": url, "wait": "interactive"})
	return err
}

// evalJSON evaluates expr in the tab, awaiting it if it is a promise, and
// returns its value as JSON (BiDi's own value serialisation is typed and
// nested; JSON.stringify in the page gives what the Chromium tests read).
func (f *firefox) evalJSON(expr string) (string, error) {
	raw, err := f.call("script.evaluate", map[string]any{
		"expression":      "(async () => JSON.stringify(await (" + expr + ")))()",
		"target":          map[string]any{"context": f.context},
		"awaitPromise":    true,
		"resultOwnership": "none",
	})
	if err != nil {
		return "", err
	}
	var r struct {
		Type   string `json:"type"`
		Result struct {
			Type  string `json:"type"`
			Value any    `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", fmt.Errorf("firefox: evaluate: %w", err)
	}
	if r.Type == "exception" {
		return "", fmt.Errorf("firefox: evaluate threw: %s", r.ExceptionDetails.Text)
	}
	s, ok := r.Result.Value.(string)
	if !ok {
		return "", fmt.Errorf("firefox: evaluate gave %s, not JSON text", r.Result.Type)
	}
	return s, nil
}

// close ends the session politely, then the process; its content processes
// exit with it.
func (f *firefox) close() {
	f.done.Store(true)
	if f.conn != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = f.call("browser.close", map[string]any{})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		f.conn.Close()
	}
	exited := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-exited
	}
}

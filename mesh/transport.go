package mesh

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Transport carries a node's signaling to the server: one encoded
// protocol message per Send and per Receive. The default is a WebSocket to
// Config.Server's /ws; a server hosting nodes of its own (a WHIP source, a
// WHEP relay, the demo) gives them an in-process connection to its
// coordinator instead.
type Transport interface {
	// Send writes one message. The node calls it from one goroutine.
	Send(msg []byte) error
	// Receive blocks until the next message arrives or the connection
	// ends. The node calls it from one goroutine.
	Receive() ([]byte, error)
	// Close ends the connection; a pending Receive returns an error.
	// It may be called more than once.
	Close() error
}

// sendTimeout bounds one WebSocket write: a server that does not read is
// as good as gone.
const sendTimeout = 5 * time.Second

// Keepalive. A server that stops without closing its sockets (SIGSTOP, a
// VM pause, a partition) leaves the TCP connection open: the kernel still
// acknowledges what the node writes, so neither a read nor a write fails,
// and the server's own pings (every 10 s) only prove it alive, never
// dead. The node pings the server every keepaliveInterval and takes a
// connection that brought nothing (no message, pong or ping) for
// silenceTimeout as dead: errSilent, after which it resumes on the next
// server of its list (resume.go). 6 s is three unanswered pings, a margin
// for a loaded server's scheduling delays, and leaves most of the 10 s
// resume grace for the resume itself.
const (
	keepaliveInterval = 2 * time.Second
	silenceTimeout    = 6 * time.Second
)

// errSilent means the server sent nothing, not even a pong, for
// silenceTimeout: stopped or cut off rather than closed.
var errSilent = errors.New("mesh: the server went silent")

// wsTransport is the default Transport: a WebSocket to the server, pinged
// every keepaliveInterval.
type wsTransport struct {
	conn      *websocket.Conn
	stop      chan struct{}
	closeOnce sync.Once
}

func newWSTransport(conn *websocket.Conn) *wsTransport {
	w := &wsTransport{conn: conn, stop: make(chan struct{})}
	alive := func() { _ = conn.SetReadDeadline(time.Now().Add(silenceTimeout)) }
	alive()
	conn.SetPongHandler(func(string) error { alive(); return nil })
	conn.SetPingHandler(func(data string) error {
		alive()
		// As gorilla's default handler: answer, and let a failed write
		// show on the next read or write.
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(sendTimeout))
		if err == websocket.ErrCloseSent {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	go w.keepalive()
	return w
}

// keepalive pings until the transport closes; the pongs keep its read
// deadline ahead (newWSTransport).
func (w *wsTransport) keepalive() {
	t := time.NewTicker(keepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if w.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(keepaliveInterval)) != nil {
				// A dead socket: the read side sees it too. A full send
				// buffer (a stopped server) times out here; the read
				// deadline decides.
				continue
			}
		case <-w.stop:
			return
		}
	}
}

func (w *wsTransport) Send(msg []byte) error {
	_ = w.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	return w.conn.WriteMessage(websocket.TextMessage, msg)
}

func (w *wsTransport) Receive() ([]byte, error) {
	_, data, err := w.conn.ReadMessage()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w: nothing for %s: %v", errSilent, silenceTimeout, err)
		}
		return nil, err
	}
	_ = w.conn.SetReadDeadline(time.Now().Add(silenceTimeout))
	return data, nil
}

func (w *wsTransport) halt() { w.closeOnce.Do(func() { close(w.stop) }) }

// Close says goodbye with a close frame, then closes the socket.
func (w *wsTransport) Close() error {
	w.halt()
	_ = w.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return w.conn.Close()
}

// abort drops a connection as a crash would: a WebSocket without its close
// frame.
func abort(t Transport) {
	if w, ok := t.(*wsTransport); ok {
		w.halt()
		_ = w.conn.Close()
		return
	}
	_ = t.Close()
}

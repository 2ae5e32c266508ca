package mesh

import (
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

// wsTransport is the default Transport: a WebSocket to the server.
type wsTransport struct{ conn *websocket.Conn }

func (w wsTransport) Send(msg []byte) error {
	_ = w.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	return w.conn.WriteMessage(websocket.TextMessage, msg)
}

func (w wsTransport) Receive() ([]byte, error) {
	_, data, err := w.conn.ReadMessage()
	return data, err
}

// Close says goodbye with a close frame, then closes the socket.
func (w wsTransport) Close() error {
	_ = w.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return w.conn.Close()
}

// abort drops a connection as a crash would: a WebSocket without its close
// frame.
func abort(t Transport) {
	if w, ok := t.(wsTransport); ok {
		_ = w.conn.Close()
		return
	}
	_ = t.Close()
}

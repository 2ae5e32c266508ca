package main

import (
	"math"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
)

// A peer's outgoing messages wait in a sendQueue, and a goroutine writes
// them only while there are some: an idle connection holds no writer
// goroutine, no 256-slot channel (6 KiB each, allocated whole) and no
// ticker. Pings are a runtime timer per connection (time.AfterFunc: no
// goroutine until it fires), written with WriteControl, which gorilla
// allows beside another writer. Measured with `client load`: ~46 KB of heap
// and stacks per idle viewer connection before this and the upgrade
// changes in handleWS, see README "Load".

// sendQueue is a peer's queue of encoded messages, at most sendBuffer.
type sendQueue struct {
	mu      sync.Mutex
	msgs    [][]byte
	writing bool // a flush goroutine runs
}

// len is how many messages wait.
func (q *sendQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// sendData queues an encoded message as send does.
func (p *peerConn) sendData(data []byte) {
	if h := p.held.Load(); h != nil {
		h.add(data) // a signal for a suspended peer: delivered if it resumes
		return
	}
	if p.isClosed() {
		return
	}
	if !p.enqueue(data) {
		p.log.Warn("signaling send buffer full; disconnecting")
		p.close()
	}
}

// enqueue queues data for p and starts a writer if none runs. It reports
// false when the queue is full.
func (p *peerConn) enqueue(data []byte) bool {
	q := &p.out
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.msgs) >= sendBuffer {
		return false
	}
	q.msgs = append(q.msgs, data)
	p.startWriter()
	return true
}

// startWriter starts a flush goroutine unless one runs. Called with p.out.mu held.
func (p *peerConn) startWriter() {
	if !p.out.writing {
		p.out.writing = true
		go p.flush()
	}
}

// flush writes what is queued until the queue is empty, then ends; once
// the peer is closed it writes what is left, a close frame, and closes
// the socket (gorilla allows one writer: only a flush writes messages).
func (p *peerConn) flush() {
	q := &p.out
	for {
		q.mu.Lock()
		batch := q.msgs
		q.msgs = nil
		closed := p.isClosed()
		if len(batch) == 0 && !closed {
			q.writing = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for _, data := range batch {
			_ = p.conn.SetWriteDeadline(time.Now().Add(p.lim.WriteTimeout))
			if err := p.conn.WriteMessage(websocket.TextMessage, data); err != nil {
				p.close()
				_ = p.conn.Close()
				return // writing stays true: nothing more is written
			}
		}
		if closed && len(batch) == 0 {
			_ = p.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			_ = p.conn.Close()
			return
		}
	}
}

func (p *peerConn) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// startPings pings the peer every PingInterval until it closes; a failed
// ping closes it.
func (p *peerConn) startPings() {
	t := time.AfterFunc(math.MaxInt64, p.ping)
	p.pinger.Store(t) // before it can fire: ping reads it
	t.Reset(p.lim.PingInterval)
}

func (p *peerConn) ping() {
	if p.isClosed() {
		return
	}
	if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.lim.WriteTimeout)); err != nil {
		p.close()
		return
	}
	p.resumer.renew(p)
	p.pinger.Load().Reset(p.lim.PingInterval)
}

// pingFrame is the ping a browser sends (static/js/client.js): its edge
// answers it without decoding it or passing it to the owner.
var pingFrame = []byte(`{"type":"ping"}`)

// pongEvery bounds how often a peer's pings are answered: a ping costs the
// server a write, and a tab pings at most every 2 s.
const pongEvery = 500 * time.Millisecond

// pong answers a peer's ping.
func (p *peerConn) pong() {
	now := time.Now().UnixNano()
	if now-p.ponged.Load() < int64(pongEvery) {
		return
	}
	p.ponged.Store(now)
	p.send(&protocol.Message{Type: protocol.TypePong})
}

// attachPing is how often the edge pings a peer whose hello waits for its
// stream's owner: an election or a takeover (cluster.ElectionWait, the
// handover) takes seconds, the session reads nothing meanwhile, so the
// peer's own pings go unanswered, and a Go node takes 6 s of that silence
// for a stopped server (mesh's silenceTimeout) and leaves for the next.
// A ping from here is as good as a pong to it.
const attachPing = 2 * time.Second

// pingWhileAttaching pings the peer every attachPing until stop.
func (p *peerConn) pingWhileAttaching() (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(attachPing)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-p.closed:
				return
			case <-t.C:
				if p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.lim.WriteTimeout)) != nil {
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// newWriteBufferPool lends gorilla a write buffer only for the length of
// one write, so an idle connection holds none (4 KiB each before).
func newWriteBufferPool() websocket.BufferPool { return &sync.Pool{} }

package mesh

import "sync"

// Reclaim holds a source's claim to its stream name across reconnects.
// The server hands a source a secret in each welcome and, when the
// source's connection drops (not when it leaves), keeps the name for it
// for a grace period: only a hello presenting that secret (or a publish
// token) takes the stream during that time. Give a source's Config one
// Reclaim and keep it for every Dial of that source: Dial presents the
// secret it holds and stores the new one. The zero value holds nothing.
// It is safe for concurrent use.
type Reclaim struct {
	mu     sync.Mutex
	secret string
}

// Secret is the secret of the last welcome, "" before any.
func (r *Reclaim) Secret() string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.secret
}

func (r *Reclaim) set(secret string) {
	if r == nil || secret == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = secret
}

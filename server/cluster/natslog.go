package cluster

import (
	"fmt"
	"log/slog"
	"sync"
)

// natsLog writes the embedded NATS server's messages to the server's log:
// its notices at debug level (it is chatty at start-up), its warnings and
// errors as such. It keeps the last error, so a server that never becomes
// ready says why (a route port taken, a store it cannot write).
type natsLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last string
}

func (l *natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Tracef(format string, v ...any)  {}
func (l *natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLog) Errorf(format string, v ...any)  { l.error(fmt.Sprintf(format, v...)) }

// Fatalf is an error here: NATS calls it for a listener it could not open,
// and the server's start-up reports that instead of exiting from inside
// the library.
func (l *natsLog) Fatalf(format string, v ...any) { l.error(fmt.Sprintf(format, v...)) }

func (l *natsLog) error(msg string) {
	l.log.Error(msg)
	l.mu.Lock()
	l.last = msg
	l.mu.Unlock()
}

func (l *natsLog) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

package peer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// slogFactory hands pion loggers that write to one slog.Logger, so pion's
// messages land in the same place as ours with a "scope" field.
type slogFactory struct{ logger *slog.Logger }

// NewLogger implements logging.LoggerFactory.
func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{logger: f.logger.With("scope", "pion/"+scope)}
}

// slogLeveled maps pion's levels onto slog. Pion is chatty below warn, so
// trace is dropped and debug/info go to slog's debug level; Enabled is
// checked first so the disabled levels cost no formatting.
type slogLeveled struct{ logger *slog.Logger }

func (l *slogLeveled) log(level slog.Level, msg string) {
	l.logger.Log(context.Background(), level, msg)
}

func (l *slogLeveled) logf(level slog.Level, format string, args ...any) {
	if l.logger.Enabled(context.Background(), level) {
		l.logger.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l *slogLeveled) Trace(string)          {}
func (l *slogLeveled) Tracef(string, ...any) {}
func (l *slogLeveled) Debug(msg string)      { l.log(slog.LevelDebug, msg) }
func (l *slogLeveled) Debugf(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args...)
}
func (l *slogLeveled) Info(msg string) { l.log(slog.LevelDebug, msg) }
func (l *slogLeveled) Infof(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args...)
}

// Pion warns about routine events ("Failed to ping without candidate pairs"
// while ICE starts, "stream is already closed" on every close), so its
// warnings are our info.
func (l *slogLeveled) Warn(msg string) { l.log(slog.LevelInfo, msg) }
func (l *slogLeveled) Warnf(format string, args ...any) {
	l.logf(slog.LevelInfo, format, args...)
}
func (l *slogLeveled) Error(msg string) { l.log(slog.LevelError, msg) }
func (l *slogLeveled) Errorf(format string, args ...any) {
	l.logf(slog.LevelError, format, args...)
}

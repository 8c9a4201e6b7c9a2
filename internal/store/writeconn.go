package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mattn/go-sqlite3"
)

// writeConn is the writer's connection to SQLite, used through the driver
// rather than through database/sql. database/sql gives every transaction a
// cancellable context and a goroutine that watches it, and the driver runs
// a statement under such a context, BEGIN among them, on a goroutine of its
// own: two goroutines started and woken per commit, and the writer parked
// off its locked thread while BEGIN runs elsewhere. Through the driver
// every statement runs on the writer's thread, one cgo call each, from
// statements prepared once.
type writeConn struct {
	conn  *sql.Conn
	stmts map[string]driver.Stmt
	args  []driver.NamedValue
	sc    *sqlite3.SQLiteConn // set only inside run
	// lockWait is how long tx waits in all for another process that holds
	// the write lock (a directory import or erasure run from the command
	// line) before it gives up; busy is told of each wait of the
	// connection's busy timeout that ran out.
	lockWait time.Duration
	busy     func(waited time.Duration)
	// stop ends the waiting: the buffer is closing.
	stop <-chan struct{}
}

// defaultLockWait is how long the writer waits in all for the write lock.
const defaultLockWait = 5 * time.Minute

// newWriteConn pins one connection of db for the writer. db must allow no
// other use of it meanwhile.
func newWriteConn(ctx context.Context, db *sql.DB) (*writeConn, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return &writeConn{conn: conn, stmts: make(map[string]driver.Stmt), lockWait: defaultLockWait}, nil
}

// run calls f with the driver's connection at hand for exec.
func (w *writeConn) run(f func() error) error {
	return w.conn.Raw(func(dc any) error {
		sc, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("buffer writer: unexpected driver connection %T", dc)
		}
		w.sc = sc
		defer func() { w.sc = nil }()
		return f()
	})
}

// exec runs one statement with positional arguments, preparing it on first
// use. Only within run.
func (w *writeConn) exec(query string, args ...driver.Value) (driver.Result, error) {
	s, ok := w.stmts[query]
	if !ok {
		var err error
		if s, err = w.sc.Prepare(query); err != nil {
			return nil, err
		}
		w.stmts[query] = s
	}
	w.args = w.args[:0]
	for i, a := range args {
		w.args = append(w.args, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	// A context that cannot be cancelled keeps the driver on this thread.
	return s.(driver.StmtExecContext).ExecContext(context.Background(), w.args)
}

// tx runs f in a transaction, committed if f returns nil and rolled back
// otherwise. Only within run.
func (w *writeConn) tx(f func() error) error {
	// Another process holding the write lock longer than the busy timeout
	// (a VACUUM of a large buffer) makes the writer wait again, up to
	// lockWait in all, rather than fail the batch.
	for start := time.Now(); ; {
		_, err := w.exec("BEGIN IMMEDIATE")
		if err == nil {
			break
		}
		var se sqlite3.Error
		if !errors.As(err, &se) || se.Code != sqlite3.ErrBusy || time.Since(start) >= w.lockWait {
			return err
		}
		select {
		case <-w.stop:
			return err // closing: a stop does not wait minutes for another process
		default:
		}
		if w.busy != nil {
			w.busy(time.Since(start))
		}
	}
	err := f()
	if err == nil {
		if _, err = w.exec("COMMIT"); err == nil {
			return nil
		}
	}
	// A failed COMMIT may leave the transaction open; ROLLBACK ends it
	// either way, and fails harmlessly if nothing is open.
	w.exec("ROLLBACK")
	return err
}

// close finalizes the prepared statements and returns the connection.
func (w *writeConn) close() error {
	errs := []error{w.run(func() error {
		var errs []error
		for _, s := range w.stmts {
			errs = append(errs, s.Close())
		}
		return errors.Join(errs...)
	})}
	return errors.Join(append(errs, w.conn.Close())...)
}

// queryRow runs a query with positional arguments, preparing it on first
// use, and scans the first row into dest (pointers to string, int64,
// []byte, sql.NullString or sql.NullInt64). found is false when there is
// no row. Only within run.
func (w *writeConn) queryRow(query string, args []driver.Value, dest ...any) (found bool, err error) {
	s, ok := w.stmts[query]
	if !ok {
		if s, err = w.sc.Prepare(query); err != nil {
			return false, err
		}
		w.stmts[query] = s
	}
	w.args = w.args[:0]
	for i, a := range args {
		w.args = append(w.args, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	rows, err := s.(driver.StmtQueryContext).QueryContext(context.Background(), w.args)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	vals := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(vals); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	for i, d := range dest {
		if err := assign(d, vals[i]); err != nil {
			return false, fmt.Errorf("column %d: %w", i, err)
		}
	}
	return true, nil
}

// assign stores a driver value in a scan destination.
func assign(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *string:
		switch x := v.(type) {
		case string:
			*d = x
		case []byte:
			*d = string(x)
		case nil:
			*d = ""
		default:
			return fmt.Errorf("cannot scan %T into a string", v)
		}
	case *int64:
		switch x := v.(type) {
		case int64:
			*d = x
		case nil:
			*d = 0
		default:
			return fmt.Errorf("cannot scan %T into an int64", v)
		}
	case *[]byte:
		switch x := v.(type) {
		case []byte:
			*d = append([]byte(nil), x...)
		case string:
			*d = []byte(x)
		case nil:
			*d = nil
		default:
			return fmt.Errorf("cannot scan %T into bytes", v)
		}
	case *sql.NullString:
		var s string
		if err := assign(&s, v); err != nil {
			return err
		}
		*d = sql.NullString{String: s, Valid: v != nil}
	case *sql.NullInt64:
		var n int64
		if err := assign(&n, v); err != nil {
			return err
		}
		*d = sql.NullInt64{Int64: n, Valid: v != nil}
	default:
		return fmt.Errorf("unsupported scan destination %T", dest)
	}
	return nil
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"
)

// BlobDir is where the photos of the buffer at path are kept.
func BlobDir(path string) string { return filepath.Join(filepath.Dir(path), "blobs") }

// Blob is the row of a photo (or another blob) an event refers to.
type Blob struct {
	SHA256      string
	Size        int64
	ContentType string
	Kind        string
	Stored      time.Time
	// Acked is how many chunks the broker acknowledged: an upload resumes
	// with the next one.
	Acked int
}

// BlobsToSend returns up to limit blobs not uploaded yet, oldest first.
func (o *Outbox) BlobsToSend(ctx context.Context, limit int) ([]Blob, error) {
	rows, err := o.rdb.QueryContext(ctx, `SELECT sha256, size, content_type, kind, stored_at, acked FROM blobs
		WHERE sent_at IS NULL ORDER BY stored_at, sha256 LIMIT ?`, limit)
	return scanBlobs(rows, err)
}

// BlobsToSendAfter returns up to limit blobs not uploaded yet that come
// after the given one in the order of BlobsToSend: the next ones of an
// upload still on its way, whose own blobs are not recorded as sent yet.
func (o *Outbox) BlobsToSendAfter(ctx context.Context, after Blob, limit int) ([]Blob, error) {
	at := after.Stored.UnixMilli()
	rows, err := o.rdb.QueryContext(ctx, `SELECT sha256, size, content_type, kind, stored_at, acked FROM blobs
		WHERE sent_at IS NULL AND (stored_at > ? OR (stored_at = ? AND sha256 > ?)) ORDER BY stored_at, sha256 LIMIT ?`,
		at, at, after.SHA256, limit)
	return scanBlobs(rows, err)
}

func scanBlobs(rows *sql.Rows, err error) ([]Blob, error) {
	if err != nil {
		return nil, fmt.Errorf("read blobs to send: %w", err)
	}
	defer rows.Close()
	var out []Blob
	for rows.Next() {
		var b Blob
		var at int64
		if err := rows.Scan(&b.SHA256, &b.Size, &b.ContentType, &b.Kind, &at, &b.Acked); err != nil {
			return nil, fmt.Errorf("read blobs to send: %w", err)
		}
		b.Stored = time.UnixMilli(at)
		out = append(out, b)
	}
	return out, rows.Err()
}

// BlobKnown reports whether an event refers to the blob.
func (o *Outbox) BlobKnown(ctx context.Context, sha string) (bool, error) {
	var n int
	if err := o.rdb.QueryRowContext(ctx, "SELECT count(*) FROM blobs WHERE sha256 = ?", sha).Scan(&n); err != nil {
		return false, fmt.Errorf("read blob: %w", err)
	}
	return n > 0, nil
}

// BlobBytes is how many bytes the blobs kept take (those uploaded and kept
// for their retention included).
func (o *Outbox) BlobBytes(ctx context.Context) (int64, error) {
	var n int64
	if err := o.rdb.QueryRowContext(ctx, "SELECT COALESCE(sum(size), 0) FROM blobs").Scan(&n); err != nil {
		return 0, fmt.Errorf("read blob sizes: %w", err)
	}
	return n, nil
}

// AckBlob records that the broker acknowledged the first acked chunks of
// a blob (it never goes back).
func (o *Outbox) AckBlob(ctx context.Context, sha string, acked int) error {
	_, err := o.submit(ctx, request{kind: opBlob, text: sha, n: int64(acked)})
	return err
}

// BlobSent records that every chunk of a blob was acknowledged.
func (o *Outbox) BlobSent(ctx context.Context, sha string) error {
	_, err := o.submit(ctx, request{kind: opBlob, text: sha, n: -1})
	return err
}

// PruneSentBlobs forgets the blobs uploaded before before and returns
// their hashes, for their files to be removed.
func (o *Outbox) PruneSentBlobs(ctx context.Context, before time.Time) ([]string, error) {
	rows, err := o.rdb.QueryContext(ctx, "SELECT sha256 FROM blobs WHERE sent_at IS NOT NULL AND sent_at < ?", before.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("prune blobs: %w", err)
	}
	var shas []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, fmt.Errorf("prune blobs: %w", err)
		}
		shas = append(shas, s)
	}
	rows.Close()
	for _, s := range shas {
		if _, err := o.submit(ctx, request{kind: opBlob, text: s, n: -2}); err != nil {
			return nil, err
		}
	}
	return shas, nil
}

// blobOp runs in the writer's transaction: n ≥ 0 records acked chunks,
// -1 marks the blob sent, -2 deletes its row.
func (o *Outbox) blobOp(sha string, n int64, now time.Time) error {
	var err error
	switch {
	case n >= 0:
		_, err = o.wc.exec("UPDATE blobs SET acked = max(acked, ?) WHERE sha256 = ?", n, sha)
	case n == -1:
		_, err = o.wc.exec("UPDATE blobs SET sent_at = ? WHERE sha256 = ? AND sent_at IS NULL", now.UnixMilli(), sha)
	default:
		_, err = o.wc.exec("DELETE FROM blobs WHERE sha256 = ?", sha)
	}
	return err
}

package powercut

import (
	"maps"
	"math/rand/v2"
	"time"
)

// PageSize is the unit in which Pages mode keeps or drops unsynced data.
const PageSize = 4096

// Mode says what a power cut keeps of the data that was written but not
// fsynced. Namespace changes (create, rename, unlink, mkdir, rmdir) not
// made durable by an fsync of their directory are reverted in every mode.
type Mode int

const (
	// DropAll keeps nothing that was not fsynced: every file is as of its
	// last fsync.
	DropAll Mode = iota
	// Torn replays each file's unsynced writes in order up to a randomly
	// chosen one, of which only a random prefix is kept (a torn write);
	// the writes after it are lost. When the chosen write is the last one,
	// everything but the tail of the last write survives.
	Torn
	// Pages keeps each 4 KiB page touched since the file's last fsync with
	// probability one half, as it was at the cut, and reverts the others
	// to their state at the last fsync, as a disk that wrote back some
	// dirty pages of the page cache and not others. The size is the synced
	// one or the one at the cut, chosen at random.
	Pages
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case DropAll:
		return "drop-all"
	case Torn:
		return "torn"
	case Pages:
		return "pages"
	}
	return "unknown"
}

// Modes lists every mode.
var Modes = []Mode{DropAll, Torn, Pages}

// wop is one unsynced change to a file's data: a write at off, or a
// truncation to size (data nil).
type wop struct {
	off  int64
	data []byte
	size int64
}

// mnode is a file or a directory of the model. A file holds its data as
// the processes see it and as of its last fsync; a directory its entries
// as the processes see them and as of its last fsync.
type mnode struct {
	ino   uint64
	dir   bool
	mode  uint32 // permission bits
	mtime time.Time

	data   []byte         // file: current content
	synced []byte         // file: content as of the last fsync
	ops    []wop          // file: changes since the last fsync, in order
	dirty  map[int64]bool // file: pages changed since the last fsync

	entries       map[string]*mnode // dir: current entries
	syncedEntries map[string]*mnode // dir: entries as of the last fsync
}

func newFile(ino uint64, mode uint32, now time.Time) *mnode {
	return &mnode{ino: ino, mode: mode, mtime: now, dirty: map[int64]bool{}}
}

func newDir(ino uint64, mode uint32, now time.Time) *mnode {
	return &mnode{ino: ino, dir: true, mode: mode, mtime: now,
		entries: map[string]*mnode{}, syncedEntries: map[string]*mnode{}}
}

func (m *mnode) markDirty(from, to int64) {
	for p := from / PageSize; p*PageSize < to; p++ {
		m.dirty[p] = true
	}
}

// write changes the current data only.
func (m *mnode) write(off int64, b []byte) {
	end := off + int64(len(b))
	if end > int64(len(m.data)) {
		m.data = grow(m.data, end)
	}
	copy(m.data[off:end], b)
	m.ops = append(m.ops, wop{off: off, data: append([]byte(nil), b...)})
	m.markDirty(off, end)
}

// truncate sets the current size.
func (m *mnode) truncate(size int64) {
	old := int64(len(m.data))
	if size < old {
		m.data = m.data[:size]
		m.markDirty(size, old)
	} else {
		m.data = grow(m.data, size)
		m.markDirty(old, size)
	}
	m.ops = append(m.ops, wop{size: size})
}

// grow extends b with zeros to size, which must not be below len(b).
func grow(b []byte, size int64) []byte {
	if int64(cap(b)) >= size {
		n := b[:size]
		clear(n[len(b):])
		return n
	}
	n := make([]byte, size, size+size/4)
	copy(n, b)
	return n
}

// sync makes the file's current data durable.
func (m *mnode) sync() {
	m.synced = append(m.synced[:0:0], m.data...)
	m.ops = nil
	clear(m.dirty)
}

// syncDir makes the directory's current entries durable.
func (m *mnode) syncDir() {
	m.syncedEntries = maps.Clone(m.entries)
}

// unsynced reports whether the node has changes an fsync would make
// durable.
func (m *mnode) unsynced() bool {
	if m.dir {
		return !maps.Equal(m.entries, m.syncedEntries)
	}
	return len(m.ops) > 0
}

// survivor is the content a cut in mode leaves of a file.
func (m *mnode) survivor(mode Mode, rng *rand.Rand) []byte {
	if len(m.ops) == 0 {
		return append([]byte(nil), m.synced...)
	}
	switch mode {
	case Torn:
		b := append([]byte(nil), m.synced...)
		last := rng.IntN(len(m.ops))
		for i, op := range m.ops[:last+1] {
			if op.data == nil {
				if op.size < int64(len(b)) {
					b = b[:op.size]
				} else {
					b = grow(b, op.size)
				}
				continue
			}
			data := op.data
			if i == last {
				data = data[:rng.IntN(len(data)+1)]
			}
			if end := op.off + int64(len(data)); end > int64(len(b)) {
				b = grow(b, end)
			}
			copy(b[op.off:], data)
		}
		return b
	case Pages:
		size := int64(len(m.synced))
		if rng.IntN(2) == 0 {
			size = int64(len(m.data))
		}
		// A file truncated since its last fsync (a WAL that starts
		// over) may keep the shorter current size: grow only grows.
		b := append([]byte(nil), m.synced...)
		if size < int64(len(b)) {
			b = b[:size]
		} else {
			b = grow(b, size)
		}
		for p := range m.dirty {
			if rng.IntN(2) == 0 {
				continue
			}
			from, to := p*PageSize, min((p+1)*PageSize, size)
			for i := from; i < to; i++ {
				if i < int64(len(m.data)) {
					b[i] = m.data[i]
				} else {
					b[i] = 0
				}
			}
		}
		return b
	}
	return append([]byte(nil), m.synced...)
}

// revert turns the tree under root into what a power cut leaves: the
// entries of every directory as of its last fsync and each file's data as
// mode keeps it. It reports how many files lost unsynced data and how
// many directories lost unsynced entries.
func revert(root *mnode, mode Mode, rng *rand.Rand) (files, dirs int) {
	seen := map[*mnode]bool{}
	var walk func(d *mnode)
	walk = func(d *mnode) {
		if seen[d] {
			return
		}
		seen[d] = true
		if d.unsynced() {
			dirs++
		}
		d.entries = maps.Clone(d.syncedEntries)
		for _, c := range d.entries {
			if c.dir {
				walk(c)
				continue
			}
			if seen[c] {
				continue
			}
			seen[c] = true
			if c.unsynced() {
				files++
			}
			c.data = c.survivor(mode, rng)
			c.sync()
		}
	}
	walk(root)
	return files, dirs
}

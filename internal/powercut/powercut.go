// Package powercut is a FUSE file system for tests that loses what a power
// cut loses, the way LazyFS does for Jepsen's tests of databases.
//
// The whole file system lives in memory in two states. Data written to a
// file is volatile until that file is fsynced (fsync or fdatasync); a
// namespace change in a directory (create, rename, unlink, mkdir, rmdir)
// is volatile until that directory is fsynced. So a file that was created
// and fsynced in a directory that was never fsynced is lost at a cut, and
// a rename without an fsync of its directory is reverted. Cut unmounts
// the file system (every descriptor still open on it fails from then on),
// reverts it to its durable state as a Mode says, and mounts what survived
// at the same place.
//
// Permissions, owners and times are kept at once (not modelled as
// volatile). POSIX locks are left to the kernel, which keeps them locally;
// shared writable mmap works (the -shm file of SQLite's WAL mode), because
// files are opened through the page cache, written through to the file
// system at every write(2). fallocate is refused with EOPNOTSUPP.
//
// Mounting needs /dev/fuse and the fusermount3 (or fusermount) helper;
// Mount fails with a clear error when either is missing.
package powercut

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Op is one operation the file system carried out, as a trigger sees it.
type Op struct {
	// Kind is "create", "mkdir", "write", "truncate", "fsync", "rename",
	// "unlink" or "rmdir".
	Kind string
	// Path is the file's path relative to the mount point (for a rename,
	// the old one), with the new name of a created or renamed entry.
	Path string
	// Size is the number of bytes written or the size truncated to.
	Size int64
}

// Stats counts what the file system did and lost.
type Stats struct {
	// Cuts is the number of power cuts.
	Cuts int
	// Writes and Fsyncs count the write and fsync operations served.
	Writes, Fsyncs int64
	// FilesReverted counts the files that lost unsynced data at a cut;
	// DirsReverted the directories that lost unsynced entries.
	FilesReverted, DirsReverted int
}

// FS is a mounted power-cut file system.
type FS struct {
	mnt string
	log *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	root    *mnode
	nextIno uint64
	gen     uint64 // mount generation: a node of an older one fails with EIO
	frozen  bool   // a trigger fired: operations wait for the cut
	trigger func(Op) bool
	fired   chan struct{}
	rng     *rand.Rand
	stats   Stats
	server  *fuse.Server
	conn    uint32 // the mount's FUSE connection (its device's minor number)
}

// Options configure Mount.
type Options struct {
	// Seed seeds the random choices of the cut modes.
	Seed uint64
	// Logger receives a line per cut; nil discards.
	Logger *slog.Logger
}

// Check reports why FUSE cannot be mounted here: /dev/fuse or the
// fusermount helper is missing.
func Check() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("powercut: /dev/fuse is missing (load the fuse module, or give the container the device): %w", err)
	}
	if _, err := fusermount(); err != nil {
		return fmt.Errorf("powercut: neither fusermount3 nor fusermount found (Debian package fuse3): %w", err)
	}
	return nil
}

func fusermount() (string, error) {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		return p, nil
	}
	return exec.LookPath("fusermount")
}

// Mount mounts an empty power-cut file system at dir, which must exist.
func Mount(dir string, opts Options) (*FS, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	f := &FS{mnt: dir, log: lg, nextIno: 2, rng: rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15))}
	f.cond = sync.NewCond(&f.mu)
	f.root = newDir(1, 0o755, time.Now())
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.mnt }

func (f *FS) mount() error {
	zero := time.Duration(0)
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:        "powercut",
			Name:          "powercut",
			DisableXAttrs: true,
			// SQLite's locks stay with the kernel, which keeps them
			// locally when the file system does not take them.
			EnableLocks: false,
			MaxWrite:    1 << 17,
			// go-fuse logs each answer the kernel no longer takes
			// after a cut's abort: expected, not worth a line.
			Logger: log.New(io.Discard, "", 0),
		},
		// The model is the only truth: the kernel asks for every lookup
		// and attribute, so nothing stale outlives a change.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
	}
	f.mu.Lock()
	gen := f.gen
	root := &node{fsys: f, m: f.root, gen: gen}
	f.mu.Unlock()
	server, err := fs.Mount(f.mnt, root, opts)
	if err != nil {
		return fmt.Errorf("powercut: mount %s: %w", f.mnt, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f.mnt, &st); err != nil {
		return fmt.Errorf("powercut: mount %s: %w", f.mnt, err)
	}
	f.mu.Lock()
	f.server = server
	f.conn = unix.Minor(st.Dev)
	f.mu.Unlock()
	return nil
}

// FreezeWhen arms a trigger: the first operation for which match returns
// true is carried out, and from then on the file system serves nothing
// (every operation waits) until Cut, as if the power went at that moment.
// The channel is closed when the trigger fires. A later call replaces an
// armed trigger.
func (f *FS) FreezeWhen(match func(Op) bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trigger = match
	f.fired = make(chan struct{})
	return f.fired
}

// Disarm removes an armed trigger that has not fired.
func (f *FS) Disarm() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trigger = nil
}

// Cut cuts the power: every operation still waiting or to come on the
// current mount fails with EIO, the file system is unmounted (lazily,
// when a descriptor is still open), reverted to its durable state as mode
// keeps it, and mounted again at the same place. Kill the processes that
// use it first: a process killed while it waits in an operation dies once
// Cut fails that operation.
func (f *FS) Cut(mode Mode) error {
	files, dirs, server, conn := f.revert(mode)
	f.log.Info("power cut", "mode", mode, "files_reverted", files, "dirs_reverted", dirs)
	if err := f.unmount(server, conn); err != nil {
		return err
	}
	return f.mount()
}

// revert ends the current mount generation and reverts the model. The
// lock is released even if the model panics, so that the panic is
// reported rather than every operation and Close waiting forever.
func (f *FS) revert(mode Mode) (files, dirs int, server *fuse.Server, conn uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	f.frozen = false
	f.trigger = nil
	f.cond.Broadcast()
	files, dirs = revert(f.root, mode, f.rng)
	f.stats.Cuts++
	f.stats.FilesReverted += files
	f.stats.DirsReverted += dirs
	server, conn = f.server, f.conn
	f.server = nil
	return files, dirs, server, conn
}

// unmount detaches the mount at once (lazily) and aborts its FUSE
// connection, so that every descriptor still open on it fails from then on
// and no process can wait forever on a server that no longer answers.
func (f *FS) unmount(server *fuse.Server, conn uint32) error {
	if server == nil {
		return nil
	}
	bin, err := fusermount()
	if err != nil {
		return fmt.Errorf("powercut: unmount %s: %w", f.mnt, err)
	}
	if out, err := exec.Command(bin, "-u", "-z", f.mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("powercut: unmount %s: %w: %s", f.mnt, err, strings.TrimSpace(string(out)))
	}
	abort(conn)
	return nil
}

// fusectl is where the kernel lists FUSE connections.
const fusectl = "/sys/fs/fuse/connections"

// abort aborts FUSE connection id through fusectl, mounting fusectl when
// it is not (as root). Without it a lazily unmounted connection lives on
// until its last descriptor is closed, which is only a leak while the
// server runs.
func abort(id uint32) {
	ctl := filepath.Join(fusectl, fmt.Sprint(id), "abort")
	if _, err := os.Stat(ctl); err != nil {
		syscall.Mount("fusectl", fusectl, "fusectl", 0, "")
	}
	os.WriteFile(ctl, []byte("1"), 0o200)
}

// Close unmounts the file system without a cut.
func (f *FS) Close() error {
	f.mu.Lock()
	f.gen++
	f.frozen = false
	server, conn := f.server, f.conn
	f.server = nil
	f.cond.Broadcast()
	f.mu.Unlock()
	return f.unmount(server, conn)
}

// Stats returns what the file system did and lost so far.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Unsynced lists the paths (relative to the mount point) of files with
// data not yet fsynced and of directories with entries not yet fsynced.
func (f *FS) Unsynced() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	var walk func(d *mnode, p string)
	walk = func(d *mnode, p string) {
		if d.unsynced() {
			out = append(out, p+"/")
		}
		for name, c := range d.entries {
			cp := filepath.Join(p, name)
			if c.dir {
				walk(c, cp)
			} else if c.unsynced() {
				out = append(out, cp)
			}
		}
	}
	walk(f.root, ".")
	return out
}

// node is the FUSE side of a model node on one mount generation.
type node struct {
	fs.Inode
	fsys *FS
	m    *mnode
	gen  uint64
}

// begin waits while the file system is frozen and locks it for one
// operation; it fails with EIO for a node of an earlier mount.
func (n *node) begin() syscall.Errno {
	f := n.fsys
	f.mu.Lock()
	for f.frozen && f.gen == n.gen {
		f.cond.Wait()
	}
	if f.gen != n.gen {
		f.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

// end unlocks after an operation that changed something, and fires an
// armed trigger that matches it.
func (n *node) end(op Op) {
	f := n.fsys
	if op.Kind != "" && f.trigger != nil && f.trigger(op) {
		f.trigger = nil
		f.frozen = true
		close(f.fired)
	}
	f.mu.Unlock()
}

func (n *node) path(name string) string {
	p := n.Path(nil)
	if name != "" {
		p = filepath.Join(p, name)
	}
	return p
}

func (n *node) child(ctx context.Context, m *mnode) *fs.Inode {
	mode := uint32(syscall.S_IFREG)
	if m.dir {
		mode = syscall.S_IFDIR
	}
	return n.NewInode(ctx, &node{fsys: n.fsys, m: m, gen: n.gen}, fs.StableAttr{Mode: mode, Ino: m.ino})
}

func fillAttr(m *mnode, a *fuse.Attr) {
	a.Ino = m.ino
	if m.dir {
		a.Mode = syscall.S_IFDIR | m.mode
		a.Nlink = 2
	} else {
		a.Mode = syscall.S_IFREG | m.mode
		a.Nlink = 1
		a.Size = uint64(len(m.data))
		a.Blocks = (a.Size + 511) / 512
	}
	a.Blksize = PageSize
	a.SetTimes(&m.mtime, &m.mtime, &m.mtime)
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeFlusher   = (*node)(nil)
	_ fs.NodeReleaser  = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRmdirer   = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeReaddirer = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)
)

// Statfs reports a roomy volume, so that free-space checks pass.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = PageSize
	out.Frsize = PageSize
	out.Blocks = 1 << 20
	out.Bfree = 1 << 19
	out.Bavail = 1 << 19
	out.Files = 1 << 16
	out.Ffree = 1 << 15
	out.NameLen = 255
	return 0
}

// Lookup finds a child in the current entries.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, e
	}
	defer n.fsys.mu.Unlock()
	if !n.m.dir {
		return nil, syscall.ENOTDIR
	}
	c, ok := n.m.entries[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	fillAttr(c, &out.Attr)
	return n.child(ctx, c), 0
}

// Getattr reports the node's attributes.
func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	defer n.fsys.mu.Unlock()
	fillAttr(n.m, &out.Attr)
	return 0
}

// Setattr truncates and changes the mode and times.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	m := n.m
	op := Op{}
	if sz, ok := in.GetSize(); ok {
		if m.dir {
			n.fsys.mu.Unlock()
			return syscall.EISDIR
		}
		if int64(sz) != int64(len(m.data)) {
			m.truncate(int64(sz))
			op = Op{Kind: "truncate", Path: n.path(""), Size: int64(sz)}
		}
		m.mtime = time.Now()
	}
	if mode, ok := in.GetMode(); ok {
		m.mode = mode & 0o7777
	}
	if mt, ok := in.GetMTime(); ok {
		m.mtime = mt
	}
	fillAttr(m, &out.Attr)
	n.end(op)
	return 0
}

// Open opens a file through the page cache.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, 0, e
	}
	defer n.fsys.mu.Unlock()
	if flags&syscall.O_TRUNC != 0 && len(n.m.data) > 0 {
		n.m.truncate(0)
	}
	return nil, 0, 0
}

// Read reads the current data.
func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, e
	}
	defer n.fsys.mu.Unlock()
	d := n.m.data
	if off >= int64(len(d)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(d)))
	out := make([]byte, end-off)
	copy(out, d[off:end])
	return fuse.ReadResultData(out), 0
}

// Write changes the current data; it is volatile until an fsync.
func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return 0, e
	}
	n.m.write(off, data)
	n.m.mtime = time.Now()
	n.fsys.stats.Writes++
	n.end(Op{Kind: "write", Path: n.path(""), Size: int64(len(data))})
	return uint32(len(data)), 0
}

// Fsync makes a file's data, or a directory's entries, durable.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	if n.m.dir {
		n.m.syncDir()
	} else {
		n.m.sync()
	}
	n.fsys.stats.Fsyncs++
	n.end(Op{Kind: "fsync", Path: n.path("")})
	return 0
}

// Flush does nothing: close(2) makes nothing durable.
func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// Release does nothing.
func (n *node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// Allocate is not supported.
func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EOPNOTSUPP
}

// Create creates a file; its entry is volatile until the directory's fsync.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, nil, 0, e
	}
	f := n.fsys
	if c, ok := n.m.entries[name]; ok {
		defer f.mu.Unlock()
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		if c.dir {
			return nil, nil, 0, syscall.EISDIR
		}
		if flags&syscall.O_TRUNC != 0 && len(c.data) > 0 {
			c.truncate(0)
		}
		fillAttr(c, &out.Attr)
		return n.child(ctx, c), nil, 0, 0
	}
	c := newFile(f.nextIno, mode&0o7777, time.Now())
	f.nextIno++
	n.m.entries[name] = c
	n.m.mtime = c.mtime
	fillAttr(c, &out.Attr)
	in := n.child(ctx, c)
	n.end(Op{Kind: "create", Path: n.path(name)})
	return in, nil, 0, 0
}

// Mkdir creates a directory; its entry is volatile until the parent's fsync.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, e
	}
	f := n.fsys
	if _, ok := n.m.entries[name]; ok {
		f.mu.Unlock()
		return nil, syscall.EEXIST
	}
	c := newDir(f.nextIno, mode&0o7777, time.Now())
	f.nextIno++
	n.m.entries[name] = c
	fillAttr(c, &out.Attr)
	in := n.child(ctx, c)
	n.end(Op{Kind: "mkdir", Path: n.path(name)})
	return in, 0
}

// Unlink removes a file's entry.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	c, ok := n.m.entries[name]
	if !ok {
		n.fsys.mu.Unlock()
		return syscall.ENOENT
	}
	if c.dir {
		n.fsys.mu.Unlock()
		return syscall.EISDIR
	}
	delete(n.m.entries, name)
	n.end(Op{Kind: "unlink", Path: n.path(name)})
	return 0
}

// Rmdir removes an empty directory's entry.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	c, ok := n.m.entries[name]
	switch {
	case !ok:
		n.fsys.mu.Unlock()
		return syscall.ENOENT
	case !c.dir:
		n.fsys.mu.Unlock()
		return syscall.ENOTDIR
	case len(c.entries) > 0:
		n.fsys.mu.Unlock()
		return syscall.ENOTEMPTY
	}
	delete(n.m.entries, name)
	n.end(Op{Kind: "rmdir", Path: n.path(name)})
	return 0
}

// Rename moves an entry; the change is volatile in each of the two
// directories until that directory's fsync.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.begin(); e != 0 {
		return e
	}
	np, ok := newParent.(*node)
	if !ok {
		n.fsys.mu.Unlock()
		return syscall.EXDEV
	}
	c, ok := n.m.entries[name]
	if !ok {
		n.fsys.mu.Unlock()
		return syscall.ENOENT
	}
	if flags != 0 {
		n.fsys.mu.Unlock()
		return syscall.EINVAL // RENAME_NOREPLACE and RENAME_EXCHANGE are not needed
	}
	if old, ok := np.m.entries[newName]; ok {
		if old.dir != c.dir {
			n.fsys.mu.Unlock()
			if old.dir {
				return syscall.EISDIR
			}
			return syscall.ENOTDIR
		}
		if old.dir && len(old.entries) > 0 {
			n.fsys.mu.Unlock()
			return syscall.ENOTEMPTY
		}
	}
	delete(n.m.entries, name)
	np.m.entries[newName] = c
	n.end(Op{Kind: "rename", Path: n.path(name)})
	return 0
}

// Readdir lists the current entries.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := n.begin(); e != 0 {
		return nil, e
	}
	defer n.fsys.mu.Unlock()
	list := make([]fuse.DirEntry, 0, len(n.m.entries))
	for name, c := range n.m.entries {
		mode := uint32(syscall.S_IFREG)
		if c.dir {
			mode = syscall.S_IFDIR
		}
		list = append(list, fuse.DirEntry{Name: name, Mode: mode, Ino: c.ino})
	}
	return fs.NewListDirStream(list), 0
}

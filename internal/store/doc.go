// Package store is the durable event buffer of mailroomd: an outbox in a
// local SQLite database (WAL, synchronous=FULL).
//
// Every event is committed here before anything else happens to it, and the
// uplink reads what to publish from here, never from a driver. A single
// writer goroutine batches whatever is queued into one transaction (group
// commit), assigns each event its UUIDv7 id and its gapless seq within the
// buffer's epoch, and answers each caller once the batch is durable.
//
// Seq starts at 1 in every epoch, has no gaps and is never reused, across
// restarts and pruning: pruning never removes the newest row, which
// carries the last position, seq and id, so a restart after any stop finds
// them in the same transaction's rows (the meta table keeps them as of the
// last clean close). A connection of its own copies committed pages from
// the WAL into the database file in the background, so commits rarely wait
// for a checkpoint. A database that cannot be read at start is
// moved aside (never deleted), a new epoch begins, and the unsent events that
// can still be read are carried over unchanged.
package store

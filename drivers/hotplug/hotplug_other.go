//go:build !linux

package hotplug

import "context"

func (w *Watcher) run(ctx context.Context) error {
	w.Log.Info("hot-plug events are not watched on this system; devices are found by their reconnect backoff")
	<-ctx.Done()
	return nil
}

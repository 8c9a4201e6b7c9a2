package fleetop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/uplink"
)

// GetBlob reassembles a blob an appliance uploaded from its retained
// manifest and chunks on the broker, and checks its SHA-256: the
// reference consumer of the blob protocol. It waits up to wait for every
// chunk.
func (c *Client) GetBlob(ctx context.Context, appliance, sha string, wait time.Duration) ([]byte, uplink.Manifest, error) {
	var m uplink.Manifest
	sha = strings.ToLower(sha)
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return nil, m, fmt.Errorf("%q is no SHA-256 (64 hex digits)", sha)
	}
	base := c.Topic(appliance, uplink.TopicBlobs+"/"+sha)
	var mu sync.Mutex
	chunks := map[int][]byte{}
	have := false
	var damaged error // why the last manifest was no JSON
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for _, topic := range []string{base, base + "/+"} {
		tok := c.c.Subscribe(topic, 1, func(_ mqtt.Client, msg mqtt.Message) {
			mu.Lock()
			defer mu.Unlock()
			if msg.Topic() == base {
				var got uplink.Manifest
				if err := json.Unmarshal(msg.Payload(), &got); err != nil {
					damaged = err
				} else {
					m, have, damaged = got, true, nil
				}
			} else if n, err := strconv.Atoi(msg.Topic()[len(base)+1:]); err == nil && n >= 0 {
				chunks[n] = append([]byte(nil), msg.Payload()...)
			}
			poke()
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, m, fmt.Errorf("subscribe %s: %v", topic, tok.Error())
		}
		defer c.c.Unsubscribe(topic)
	}
	deadline := time.After(wait)
	for {
		mu.Lock()
		done := have && len(chunks) >= m.Chunks
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			mu.Lock()
			defer mu.Unlock()
			if !have && damaged != nil {
				return nil, m, fmt.Errorf("the manifest of blob %s from %s is damaged (not JSON: %v)", sha, appliance, damaged)
			}
			if !have {
				return nil, m, fmt.Errorf("no manifest of blob %s from %s within %s", sha, appliance, wait)
			}
			return nil, m, fmt.Errorf("blob %s: %d of %d chunks within %s", sha, len(chunks), m.Chunks, wait)
		case <-ctx.Done():
			return nil, m, ctx.Err()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var b bytes.Buffer
	for i := range m.Chunks {
		part, ok := chunks[i]
		if !ok {
			return nil, m, fmt.Errorf("blob %s: chunk %d missing", sha, i)
		}
		b.Write(part)
	}
	sum := sha256.Sum256(b.Bytes())
	if got := hex.EncodeToString(sum[:]); got != sha || int64(b.Len()) != m.Size {
		return nil, m, fmt.Errorf("blob %s is damaged: its chunks make %d bytes with SHA-256 %s, not %d bytes with the SHA-256 asked for", sha, b.Len(), got, m.Size)
	}
	return b.Bytes(), m, nil
}

package fleetop

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/fleet"
)

// DefaultPartSize is how many bytes of the CSV file one part of a
// directory push carries at most: its envelope stays under 100 KB, below
// AWS IoT Core's 128 KB message limit.
const DefaultPartSize = 64 << 10

// SplitDirectory cuts a directory file into parts of at most size bytes,
// at line ends, so that no part splits a character. A line longer than
// size is a part of its own.
func SplitDirectory(csv []byte, size int) []string {
	var parts []string
	for len(csv) > 0 {
		n := min(size, len(csv))
		if n < len(csv) {
			cut := n
			for cut > 0 && csv[cut-1] != '\n' {
				cut--
			}
			if cut == 0 { // one line longer than size
				cut = n
				for cut < len(csv) && csv[cut-1] != '\n' {
					cut++
				}
			}
			n = cut
		}
		parts = append(parts, string(csv[:n]))
		csv = csv[n:]
	}
	return parts
}

// SignDirectory makes the signed parts of a directory push.
func (c *Client) SignDirectory(target string, version int64, csv []byte, partSize int, ttl time.Duration) ([][]byte, error) {
	if c.opts.Key == nil {
		return nil, errors.New("no signing key")
	}
	if partSize <= 0 {
		partSize = DefaultPartSize
	}
	if len(csv) > envelope.MaxDirectorySize {
		return nil, fmt.Errorf("the directory file is %d bytes; a box takes at most %d", len(csv), envelope.MaxDirectorySize)
	}
	sum := sha256.Sum256(csv)
	parts := SplitDirectory(csv, partSize)
	if len(parts) > envelope.MaxDirectoryParts {
		return nil, fmt.Errorf("the directory needs %d parts of %d bytes; at most %d are accepted", len(parts), partSize, envelope.MaxDirectoryParts)
	}
	now := c.opts.Now()
	out := make([][]byte, 0, len(parts))
	for i, data := range parts {
		env, err := envelope.Sign(c.opts.Key, c.opts.KeyID, envelope.Payload{V: 1, Kind: envelope.KindDirectory, Target: target,
			Version: version, Part: i + 1, Parts: len(parts), SHA256: hex.EncodeToString(sum[:]), Directory: data,
			Issued: now.UTC(), Expires: now.Add(ttl).UTC()})
		if err != nil {
			return nil, err
		}
		if len(env) > envelope.MaxSize {
			return nil, fmt.Errorf("part %d is %d bytes signed, over the %d a box accepts: use a smaller part size", i+1, len(env), envelope.MaxSize)
		}
		out = append(out, env)
	}
	return out, nil
}

// DirectoryOutcome is what one appliance reported for a pushed directory.
type DirectoryOutcome struct {
	Appliance string
	Report    fleet.DirectoryReport
	// Reported is false when no report came within the wait.
	Reported bool
}

// PushDirectory publishes the signed parts of a directory push, retained,
// to one appliance, removes retained parts of an earlier push beyond the
// last, and waits up to wait for the appliance's report of this version.
func (c *Client) PushDirectory(appliance string, version int64, parts [][]byte, wait time.Duration) (DirectoryOutcome, error) {
	out := DirectoryOutcome{Appliance: appliance}
	// The box's last report: a version not newer than it reported is
	// refused here, before its parts replace the retained parts of the
	// directory in use (a box whose buffer was salvaged would take them).
	reported, err := c.Collect(appliance+"/"+fleet.TopicDirectoryReported, time.Second)
	if err != nil {
		return out, err
	}
	for _, m := range reported {
		var r fleet.DirectoryReport
		// The versions the box tried (applied, refused or passed over):
		// not the version a refusal names, which may be one it never tried.
		if json.Unmarshal(m.Payload, &r) == nil && max(r.Highest, r.Applied) >= version {
			return out, fmt.Errorf("version %d is not newer than version %d, the last %s tried: push a higher version", version, max(r.Highest, r.Applied), appliance)
		}
	}
	// Retained parts of an earlier, longer push are removed after this
	// one's, so that the box never holds a mix for long (it would only
	// pass them over: they name another version).
	old, err := c.Collect(appliance+"/"+fleet.TopicDirectoryDesired+"/+", time.Second)
	if err != nil {
		return out, err
	}
	var mu sync.Mutex
	done := make(chan struct{})
	topic := c.Topic(appliance, fleet.TopicDirectoryReported)
	st := c.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var r fleet.DirectoryReport
		if m.Retained() || json.Unmarshal(m.Payload(), &r) != nil || r.Version != version {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !out.Reported {
			out.Report, out.Reported = r, true
			close(done)
		}
	})
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return out, fmt.Errorf("subscribe %s: %v", topic, st.Error())
	}
	defer c.c.Unsubscribe(topic)
	for i, env := range parts {
		if err := c.publish(c.Topic(appliance, fleet.TopicDirectoryDesired+"/"+strconv.Itoa(i+1)), env, true); err != nil {
			return out, fmt.Errorf("publish directory part %d to %s: %w", i+1, appliance, err)
		}
	}
	for _, m := range old {
		n, err := strconv.Atoi(m.Topic[len(c.Topic(appliance, fleet.TopicDirectoryDesired))+1:])
		if err == nil && n > len(parts) && len(m.Payload) > 0 {
			if err := c.publish(m.Topic, nil, true); err != nil {
				return out, fmt.Errorf("remove old directory part %d of %s: %w", n, appliance, err)
			}
		}
	}
	select {
	case <-done:
	case <-time.After(wait):
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// PublishRaw publishes bytes as they are on a topic below an appliance's
// prefix, for tests and tools that send hand-made messages.
func (c *Client) PublishRaw(appliance, suffix string, payload []byte, retain bool) error {
	return c.publish(c.Topic(appliance, suffix), payload, retain)
}

func (c *Client) publish(topic string, payload []byte, retain bool) error {
	pt := c.c.Publish(topic, 1, retain, payload)
	if !pt.WaitTimeout(10 * time.Second) {
		return errors.New("no PUBACK within 10s")
	}
	return pt.Error()
}

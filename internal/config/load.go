package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

// String formats the problem as file:line:col: field: message.
func (p Problem) String() string {
	field := p.Field
	if field == "" {
		field = "(document)"
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Line, p.Column, field, p.Msg)
}

// Errors lists every problem found in a configuration file.
type Errors []Problem

// Error returns one problem per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

type pos struct{ line, col int }

// decoder walks a YAML node tree into a struct, rejecting unknown and
// duplicate keys and remembering where each field was written.
type decoder struct {
	file     string
	problems Errors
	where    map[string]pos // field path -> position of its value
	// decodeFailed holds fields whose value could not be decoded.
	decodeFailed map[string]bool
}

func (d *decoder) addf(p pos, field, format string, args ...any) {
	if d.decodeFailed[field] {
		return
	}
	d.problems = append(d.problems, Problem{File: d.file, Line: p.line, Column: p.col, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// at returns the position of a field, or of its closest written parent.
func (d *decoder) at(field string) pos {
	for f := field; f != ""; {
		if p, ok := d.where[f]; ok {
			return p
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return d.where[""]
}

// Load reads, decodes and validates a configuration file. Relative paths in
// it are resolved against the file's directory. The error, if any, is an
// Errors value listing every problem.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, b)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse decodes and validates configuration bytes; name is used in messages
// and to resolve relative paths.
func Parse(name string, b []byte) (*Config, error) {
	d := &decoder{file: name, where: map[string]pos{"": {1, 1}}}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		d.addf(pos{line, 1}, "", "invalid YAML: %s", msg)
		return nil, d.problems
	}
	cfg := &Config{File: name}
	if root.Kind == 0 || len(root.Content) == 0 {
		d.addf(pos{1, 1}, "", "empty configuration file")
		return nil, d.problems
	}
	d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	// Go on to semantic checks so that every problem is listed at once, but
	// not twice for a field that could not even be decoded.
	d.decodeFailed = map[string]bool{}
	for _, p := range d.problems {
		d.decodeFailed[p.Field] = true
	}
	cfg.applyDefaults(func(path string) bool { _, ok := d.where[path+"#key"]; return ok })
	d.validate(cfg)
	if len(d.problems) > 0 {
		sort.SliceStable(d.problems, func(i, j int) bool {
			a, b := d.problems[i], d.problems[j]
			return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
		})
		return nil, d.problems
	}
	return cfg, nil
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	p := pos{n.Line, n.Column}
	d.where[path] = p
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && v.Kind() != reflect.Slice {
		if v.Kind() == reflect.Struct {
			d.addf(p, path, "no value: write its keys, or leave it out for its defaults")
		} else {
			d.addf(p, path, "no value: write one, or leave the key out for its default")
		}
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.addf(p, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.addf(p, path, "expected a mapping of keys, got %s", describe(n))
			return
		}
		fields := map[string]int{}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				fields[tag] = i
			}
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := pos{k.Line, k.Column}
			key := k.Value
			fp := join(path, key)
			if seen[key] {
				d.addf(kp, fp, "duplicate key")
				continue
			}
			seen[key] = true
			idx, ok := fields[key]
			if !ok {
				d.addf(kp, fp, "unknown key%s", suggest(key, fields))
				continue
			}
			d.decode(val, v.Field(idx), fp)
			d.where[fp+"#key"] = kp
		}
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return // a list written without a value is an empty list
		}
		if n.Kind != yaml.SequenceNode {
			d.addf(p, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.addf(p, path, "expected a single value, got %s", describe(n))
			return
		}
		if n.Tag == "!!null" {
			d.addf(p, path, "no value: write one, or leave the key out for its default")
			return
		}
		// Only a YAML integer for an integer and true or false for a
		// flag: 1.9 is not silently 1, and yes is not true.
		switch v.Kind() {
		case reflect.Int, reflect.Int64:
			if n.Tag != "!!int" {
				d.addf(p, path, "expected %s, got %q", kindName(v.Kind()), n.Value)
				return
			}
		case reflect.Bool:
			if n.Tag != "!!bool" {
				d.addf(p, path, "expected %s, got %q", kindName(v.Kind()), n.Value)
				return
			}
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.addf(p, path, "expected %s, got %q", kindName(v.Kind()), n.Value)
		}
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	default:
		return "a string"
	}
}

func suggest(key string, fields map[string]int) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	return " (known keys: " + strings.Join(known, ", ") + ")"
}

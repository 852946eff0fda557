package sdknet

import (
	"os"
	"strings"
)

// SetTOML sets keys (raw TOML values) in section of the file at path:
// existing keys are replaced in place, missing ones are added at the start
// of the section. Section "" is the top level.
func SetTOML(t T, path, section string, kv map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	lines := strings.Split(string(b), "\n")
	cur, header := "", -1
	seen := map[string]bool{}
	for i, l := range lines {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "[") && strings.HasSuffix(tl, "]") {
			cur = strings.Trim(tl, "[]")
			if cur == section {
				header = i
			}
			continue
		}
		if cur != section {
			continue
		}
		k, _, ok := strings.Cut(tl, "=")
		if !ok || strings.HasPrefix(tl, "#") {
			continue
		}
		k = strings.TrimSpace(k)
		if v, want := kv[k]; want && !seen[k] {
			lines[i] = k + " = " + v
			seen[k] = true
		}
	}
	var add []string
	for k, v := range kv {
		if !seen[k] {
			add = append(add, k+" = "+v)
		}
	}
	if len(add) > 0 {
		if header < 0 && section != "" {
			lines = append(lines, "", "["+section+"]")
			header = len(lines) - 1
		}
		rest := append(add, lines[header+1:]...)
		lines = append(lines[:header+1], rest...)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// ReadLimited reads the file at path, refusing one larger than limit bytes,
// with one-line errors that name the file and the fix: no such file, a
// directory (give a file or a glob), not a regular file (only when regular
// is set: a named pipe such as bash's <(…) is otherwise read), too large
// (hint, when not empty, is added: "; is this really a certificate?"). It
// reads what it is given and nothing else: "-" is a file named "-", not
// standard input, and no permission is checked (see ReadPrivate).
func ReadLimited(path string, limit int64, regular bool, hint string) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: no such file; check the path", path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	case st.IsDir():
		return nil, fmt.Errorf("%s: is a directory; give a file, or a glob such as '%s/*.pem'", path, strings.TrimSuffix(path, "/"))
	case regular && !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file", path)
	case st.Mode().IsRegular() && st.Size() > limit:
		return nil, fmt.Errorf("%s: %d bytes is larger than the %s limit%s", path, st.Size(), sizeText(limit), hint)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than the %s limit%s", path, sizeText(limit), hint)
	}
	return b, nil
}

// sizeText is n bytes in MiB when a whole number of them, else in KiB.
func sizeText(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

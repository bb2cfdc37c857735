#!/usr/bin/env bash
# Build the installable GPU Ops Console on Linux:
#   dist/gpu-console/                                    PyInstaller one-dir bundle (resources/packaging/gpu-console.spec)
#   dist/gpu-ops-console-<version>-linux-<machine>.tar.gz  the bundle as a tarball
#   dist/gpu-ops-console_<version>_<arch>.deb             /opt bundle, /usr/bin link, desktop entry, icons, agent unit
# Usage: scripts/dev/build_package.sh [--skip-deb]      (idempotent: every run rebuilds the outputs from scratch)
# Env: PYTHON (default .venv/bin/python), PYINSTALLER_CLEAN=1 (drop PyInstaller's analysis cache first),
#      DEB_COMPRESSION=xz (smaller .deb, slower build; default gzip).
set -euo pipefail

skip_deb=0
for arg in "$@"; do
    case "$arg" in
        --skip-deb) skip_deb=1 ;;
        -h | --help)
            sed -n '2,8p' "$0"
            exit 0
            ;;
        *)
            echo "build_package.sh: unknown argument: $arg (expected --skip-deb)" >&2
            exit 2
            ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"
packaging="$root/resources/packaging"
dist="$root/dist"
work="$root/build"

if [[ ! -x "$python" ]]; then
    echo "build_package.sh: no Python at $python (create .venv first, or set PYTHON)" >&2
    exit 1
fi
if ! "$python" -c "import PyInstaller" 2>/dev/null; then
    echo "== installing PyInstaller into $("$python" -c 'import sys; print(sys.prefix)')"
    "$python" -m pip install --quiet "pyinstaller>=6.6,<7"
fi

version="$("$python" -c 'import console; print(console.__version__)')"
machine="$(uname -m)"
echo "== gpu-ops-console $version ($machine), PyInstaller $("$python" -m PyInstaller --version)"

echo "== bundle: dist/gpu-console/"
clean_flag=()
if [[ "${PYINSTALLER_CLEAN:-0}" == 1 ]]; then
    clean_flag=(--clean)
fi
"$python" -m PyInstaller --noconfirm --log-level WARN "${clean_flag[@]}" \
    --distpath "$dist" --workpath "$work/pyinstaller" "$packaging/gpu-console.spec"
bundle="$dist/gpu-console"
# Some interpreters (pyenv and other source builds) ship libpython with full DWARF debug info: ~20 MB for
# nothing. Drop debug sections from CPython's own files only; everything else stays untouched (strip=False in
# the spec: stripping numpy's OpenBLAS breaks it).
if command -v strip >/dev/null && command -v file >/dev/null; then
    while IFS= read -r -d '' elf; do
        if file -b "$elf" | grep -q 'with debug_info'; then
            strip --strip-debug "$elf"
        fi
    done < <(find "$bundle/_internal" -maxdepth 1 -name 'libpython3*.so*' -type f -print0
        find "$bundle/_internal" -path '*/lib-dynload/*.so' -type f -print0)
fi
"$bundle/gpu-console" --version >/dev/null

tarball="$dist/gpu-ops-console-$version-linux-$machine.tar.gz"
echo "== tarball: ${tarball#"$root"/}"
rm -f "$tarball"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$dist" -cf - gpu-console | gzip -6 >"$tarball"

deb=""
if [[ "$skip_deb" == 0 ]]; then
    arch="$(dpkg --print-architecture)"
    deb="$dist/gpu-ops-console_${version}_$arch.deb"
    echo "== deb: ${deb#"$root"/}"
    stage="$work/deb/gpu-ops-console_${version}_$arch"
    rm -rf "$stage"
    install -d "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications" \
        "$stage/usr/share/icons/hicolor/scalable/apps" "$stage/usr/share/icons/hicolor/256x256/apps" \
        "$stage/lib/systemd/system"
    cp -a "$bundle" "$stage/opt/gpu-ops-console"
    # The bootloader resolves its own path through the link, so a symlink is enough (no wrapper script).
    ln -s /opt/gpu-ops-console/gpu-console "$stage/usr/bin/gpu-console"
    install -m 0644 "$packaging/gpu-ops-console.desktop" "$stage/usr/share/applications/"
    install -m 0644 "$packaging/gpu-ops-console.svg" "$stage/usr/share/icons/hicolor/scalable/apps/"
    install -m 0644 "$packaging/gpu-ops-console.png" "$stage/usr/share/icons/hicolor/256x256/apps/"
    install -m 0644 "$packaging/gpu-console-agent.service" "$stage/lib/systemd/system/"
    install -m 0755 "$packaging/postinst" "$packaging/prerm" "$packaging/postrm" "$stage/DEBIAN/"

    # The bundle carries its own libraries but not glibc: require at least the build host's.
    glibc="$(dpkg-query -W -f='${Version}' libc6 | cut -d- -f1)"
    # Qt's run-time libraries for offscreen and for a real X11 window (conventions.md, "Debian packages for Qt").
    depends="libc6 (>= $glibc), libegl1, libgl1, libopengl0, libxkbcommon0, libfontconfig1, libfreetype6"
    depends+=", libdbus-1-3, libglib2.0-0, fonts-dejavu-core, libxkbcommon-x11-0, libx11-xcb1, libxcb-cursor0"
    depends+=", libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render-util0"
    depends+=", libxcb-shape0, libxcb-xkb1, libxcb-xinerama0, passwd"
    installed_kib="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_kib/" \
        -e "s/@DEPENDS@/$depends/" "$packaging/control.in" >"$stage/DEBIAN/control"

    rm -f "$deb"
    # gzip by default: xz saves ~25% of the download but costs minutes of CPU on a small build machine.
    dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-gzip}" --build "$stage" "$deb" >/dev/null
    rm -rf "$stage"
fi

human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }
unpacked_bytes="$(du -sb "$bundle" | cut -f1)"
file_count="$(find "$bundle" -type f | wc -l)"
echo
echo "== sizes"
printf '%-46s %12s bytes  %s  (%s files; budget 250 MB)\n' "bundle, unpacked" "$unpacked_bytes" \
    "$(human "$unpacked_bytes")" "$file_count"
tar_bytes="$(stat -c %s "$tarball")"
printf '%-46s %12s bytes  %s\n' "$(basename "$tarball")" "$tar_bytes" "$(human "$tar_bytes")"
if [[ -n "$deb" ]]; then
    deb_bytes="$(stat -c %s "$deb")"
    printf '%-46s %12s bytes  %s\n' "$(basename "$deb")" "$deb_bytes" "$(human "$deb_bytes")"
fi
if ((unpacked_bytes > 250 * 1000 * 1000)); then
    echo "build_package.sh: the unpacked bundle exceeds the 250 MB budget" >&2
    exit 1
fi

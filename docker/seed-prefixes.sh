#!/bin/sh
# Seeds an empty prefix volume with the prefixes shipped in the image (the Kubernetes manifests run
# it as an init container: a fresh PersistentVolumeClaim mounted over /app/prefixes would hide them).
#   seed-prefixes TARGET [SOURCE]      SOURCE defaults to /app/prefixes (the image's copy)
# A TARGET with anything in it (but a filesystem's lost+found) is left as it is: the operator's prefixes, PATCH state and uploads
# are never overwritten. The copy is made in a hidden folder of TARGET, then each entry is renamed
# into place: the service's watcher (maybe another replica's, on a shared volume) never sees a
# half-written file, and two pods seeding at once leave one complete set.
set -eu
target=$1
source=${2:-/app/prefixes}
if ls -A "$target" | grep -qv '^lost+found$'; then
    echo "seed-prefixes: $target is not empty: left as it is"
    exit 0
fi
staging="$target/.seed-$(cat /proc/sys/kernel/hostname)-$$"
mkdir "$staging"
# A failed copy leaves the volume as empty as it was (the next try of the pod seeds it).
trap 'rm -rf "$staging"' EXIT
cp -R "$source/." "$staging/"
count=0
for entry in "$staging"/* "$staging"/.[!.]*; do
    [ -e "$entry" ] || continue
    mv "$entry" "$target/"
    count=$((count + 1))
done
rmdir "$staging"
echo "seed-prefixes: copied $count entries of $source into the empty $target"

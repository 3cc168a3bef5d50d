# The bench's big-closure package set: five packages of about 108 MiB
# each (541 MiB in all), built offline from the host like tests/pkgs (the
# sandbox is off).  Each holds the host's shared libraries (real binaries:
# compressible about 2:1, about a hundred files each) and a share of
# incompressible bytes (AES-128-CTR of zeros), as a real closure has.
{ system ? builtins.currentSystem }:

let
  mk = { name, script, ... }@args: derivation ((removeAttrs args [ "script" ]) // {
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/bin:/usr/bin";
  });

  # Package i: libraries from the i-th slice of the sorted file list, up to
  # libbytes, plus randbytes of incompressible data.
  big = i: mk {
    name = "bench-big${toString i}-1.0";
    slice = toString i;
    libbytes = toString (78 * 1024 * 1024);
    randbytes = toString (28 * 1024 * 1024 + 262144);
    key = "0${toString i}0102030405060708090a0b0c0d0e0f";
    script = ''
      set -e
      mkdir -p "$out/lib" "$out/share"
      # Files of /usr/lib/x86_64-linux-gnu in a fixed order, dealt out
      # round-robin to the five packages, until libbytes are copied.
      n=0 total=0
      find /usr/lib/x86_64-linux-gnu -type f -size +0 2>/dev/null | LC_ALL=C sort |
      while read -r f; do
          n=$((n + 1))
          [ $((n % 5)) -eq $((slice % 5)) ] || continue
          s=$(wc -c < "$f")
          [ $((total + s)) -le "$libbytes" ] || continue
          d="$out/lib/$(echo "$f" | tr / _)"
          cp "$f" "$d" 2>/dev/null || continue
          total=$((total + s))
      done
      head -c "$randbytes" /dev/zero |
          openssl enc -aes-128-ctr -nosalt -K "$key" \
          -iv 00000000000000000000000000000000 > "$out/share/data.bin"
      mkdir -p "$out/bin"
      cp /bin/busybox "$out/bin/bench-big${toString i}"
    '';
  };
in
{
  big1 = big 1;
  big2 = big 2;
  big3 = big 3;
  big4 = big 4;
  big5 = big 5;
}

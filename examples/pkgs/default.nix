# A demo package set for trying nixmirror on a machine with no network.
# It needs no nixpkgs: every package is built by the host's /bin/sh from
# the host's busybox (Debian's busybox-static, which ./bootstrap
# installs), so Nix's sandbox must be off:
#
#     NIX_CONFIG='sandbox = false' ./nixmirror serve --pkgs-path examples/pkgs
#
# Images it offers (any mix of names, joined by /):
#     nix/shell                 sh, coreutils and friends, nano (as vi)
#     nix/shell/hello           ... plus a hello command
#     nix/hello                 only hello (its Cmd)
#     nix/shell/cowsay/figlet   two toy commands
#
# A real site points --pkgs-path or --pkgs-repo at nixpkgs instead.
{ system ? builtins.currentSystem }:

let
  # A derivation whose builder is the host shell.
  mk = { name, script, meta ? null, ... }@args:
    let
      drv = derivation ((removeAttrs args [ "meta" "script" ]) // {
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" script ];
        PATH = "/bin:/usr/bin";
      });
    in
    if meta == null then drv else drv // { inherit meta; };

  # A package with one shell script, $out/bin/<bin>, run by busybox sh.
  script = { name, bin, body, meta ? { } }: mk {
    inherit name bin;
    text = "#!${busybox}/bin/sh\n" + body + "\n";
    meta = { mainProgram = bin; } // meta;
    script = ''
      set -e
      mkdir -p "$out/bin"
      printf '%s' "$text" > "$out/bin/$bin"
      chmod 0555 "$out/bin/$bin"
    '';
  };

  bb = "${busybox}/bin/busybox";

  busybox = mk {
    name = "busybox-static";
    applets = [
      "sh" "ash" "ls" "cat" "echo" "env" "mkdir" "rm" "cp" "mv" "ln"
      "chmod" "head" "tail" "grep" "sed" "awk" "sort" "uniq" "wc" "tr"
      "cut" "date" "sleep" "true" "false" "test" "printf" "id" "uname"
      "pwd" "touch" "find" "xargs" "tee" "basename" "dirname" "expr"
      "mktemp" "ps" "kill" "vi" "less" "whoami" "hostname"
    ];
    script = ''
      set -e
      mkdir -p "$out/bin"
      cp /bin/busybox "$out/bin/busybox"
      chmod 0555 "$out/bin/busybox"
      for a in $applets; do
          ln -s busybox "$out/bin/$a"
      done
    '';
  };

  # The packages that "shell" stands for.
  bashInteractive = mk {
    name = "bash-as-busybox-sh";
    script = ''
      set -e
      mkdir -p "$out/bin"
      printf '#!${busybox}/bin/sh\nexec ${bb} sh "$@"\n' > "$out/bin/bash"
      chmod 0555 "$out/bin/bash"
      ln -s ${bb} "$out/bin/sh"
    '';
  };

  coreutils = mk {
    name = "coreutils-as-busybox";
    script = ''
      set -e
      mkdir -p "$out/bin"
      for t in ${busybox}/bin/*; do
          [ "$(basename "$t")" = busybox ] || ln -s ${bb} "$out/bin/$(basename "$t")"
      done
    '';
  };

  moreutils = script {
    name = "sponge-0.1";
    bin = "sponge";
    body = ''t=$(${bb} mktemp) && ${bb} cat > "$t" && ${bb} mv "$t" "$1"'';
  };

  nano = script {
    name = "nano-as-vi";
    bin = "nano";
    body = ''exec ${bb} vi "$@"'';
  };
in
{
  inherit busybox bashInteractive coreutils moreutils nano;

  hello = script {
    name = "hello-1.0";
    bin = "hello";
    body = ''echo "Hello from a Nix image built by nixmirror."'';
    meta.description = "Says hello";
  };

  cowsay = script {
    name = "cowsay-0.1";
    bin = "cowsay";
    body = ''
      m="$*"; [ -n "$m" ] || m=moo
      echo " $(echo "$m" | ${bb} sed 's/./_/g')__"
      echo "< $m >"
      echo " $(echo "$m" | ${bb} sed 's/./-/g')--"
      echo '        \   ^__^'
      echo '         \  (oo)\_______'
      echo '            (__)\       )\/\'
      echo '                ||----w |'
      echo '                ||     ||' '';
  };

  figlet = script {
    name = "figlet-0.1";
    bin = "figlet";
    body = ''echo "$*" | ${bb} tr 'a-z' 'A-Z' | ${bb} sed 's/./& /g' '';
  };
}

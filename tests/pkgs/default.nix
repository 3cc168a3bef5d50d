# An offline package set for nixmirror's tests, built from builtins only
# (no nixpkgs).  Builders are the host's /bin/sh with PATH=/bin:/usr/bin
# (the sandbox is off, so they may copy host binaries such as
# busybox-static and use openssl for deterministic incompressible data).
# Attribute names are relied upon by the end-to-end tests.
{ system ? builtins.currentSystem }:

let
  # A derivation run by the host shell; meta, when given, is added to the
  # result the way nixpkgs exposes it.
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

  # A package holding one executable script $out/bin/<bin>.
  scriptBin = { name, bin, text, meta ? null }: mk {
    inherit name bin text meta;
    script = ''
      set -e
      mkdir -p "$out/bin"
      printf '%s\n' "$text" > "$out/bin/$bin"
      chmod 0555 "$out/bin/$bin"
    '';
  };

  # Deterministic incompressible bytes: AES-128-CTR of zeros.
  blob = { name, file, size, key }: mk {
    inherit name file size key;
    script = ''
      set -e
      mkdir -p "$(dirname "$out/$file")"
      head -c "$size" /dev/zero |
          openssl enc -aes-128-ctr -nosalt -K "$key" \
          -iv 00000000000000000000000000000000 > "$out/$file"
      test "$(wc -c < "$out/$file")" -eq "$size"
    '';
  };

  applets = [
    "sh" "ash" "ls" "cat" "echo" "env" "mkdir" "rm" "cp" "mv" "ln"
    "chmod" "head" "tail" "grep" "sed" "awk" "sort" "uniq" "wc" "tr"
    "cut" "date" "sleep" "true" "false" "test" "printf" "id" "uname"
    "pwd" "touch" "find" "xargs" "tee" "basename" "dirname" "expr"
    "mktemp" "ps" "kill" "vi" "wget" "whoami"
  ];

  bb = "${busybox}/bin/busybox";

  busybox = mk {
    name = "busybox-1.35.0";
    inherit applets;
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

  # Busybox has no bash applet: bash runs busybox's sh.
  bashInteractive = mk {
    name = "bash-interactive-5.2";
    text = ''
      #!${busybox}/bin/sh
      exec ${bb} sh "$@"
    '';
    script = ''
      set -e
      mkdir -p "$out/bin"
      printf '%s' "$text" > "$out/bin/bash"
      chmod 0555 "$out/bin/bash"
      ln -s bash "$out/bin/sh"
    '';
  };

  coreutils = mk {
    name = "coreutils-9.1";
    inherit bb;
    tools = [
      "env" "ls" "cat" "echo" "mkdir" "rm" "cp" "mv" "ln" "chmod" "head"
      "tail" "sort" "uniq" "wc" "tr" "cut" "date" "sleep" "true" "false"
      "test" "printf" "id" "uname" "pwd" "touch" "tee" "basename"
      "dirname" "expr" "mktemp" "whoami"
    ];
    script = ''
      set -e
      mkdir -p "$out/bin"
      for t in $tools; do
          ln -s "$bb" "$out/bin/$t"
      done
    '';
  };

  moreutils = scriptBin {
    name = "moreutils-0.67";
    bin = "sponge";
    text = ''
      #!${busybox}/bin/sh
      t=$(${bb} mktemp) || exit 1
      ${bb} cat > "$t" && ${bb} mv "$t" "$1"'';
  };

  nano = scriptBin {
    name = "nano-7.2";
    bin = "nano";
    text = ''
      #!${busybox}/bin/sh
      exec ${bb} vi "$@"'';
  };

  cacert = mk {
    name = "nss-cacert-3.95";
    pem = ''
      -----BEGIN CERTIFICATE-----
      MIIFazCCA1OgAwIBAgIRAIIQz7DSQONZRGPgu2OCiwAwDQYJKoZIhvcNAQELBQAw
      TzELMAkGA1UEBhMCVVMxKTAnBgNVBAoTIEludGVybmV0IFNlY3VyaXR5IFJlc2Vh
      cmNoIEdyb3VwMRUwEwYDVQQDEwxJU1JHIFJvb3QgWDEwHhcNMTUwNjA0MTEwNDM4
      WhcNMzUwNjA0MTEwNDM4WjBPMQswCQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJu
      ZXQgU2VjdXJpdHkgUmVzZWFyY2ggR3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBY
      MTCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIBAK3oJHP0FDfzm54rVygc
      h77ct984kIxuPOZXoHj3dcKi/vVqbvYATyjb3miGbESTtrFj/RQSa78f0uoxmyF+
      0TM8ukj13Xnfs7j/EvEhmkvBioZxaUpmZmyPfjxwv60pIgbz5MDmgK7iS4+3mX6U
      A5/TR5d8mUgjU+g4rk8Kb4Mu0UlXjIB0ttov0DiNewNwIRt18jA8+o+u3dpjq+sW
      T8KOEUt+zwvo/7V3LvSye0rgTBIlDHCNAymg4VMk7BPZ7hm/ELNKjD+Jo2FR3qyH
      B5T0Y3HsLuJvW5iB4YlcNHlsdu87kGJ55tukmi8mxdAQ4Q7e2RCOFvu396j3x+UC
      B5iPNgiV5+I3lg02dZ77DnKxHZu8A/lJBdiB3QW0KtZB6awBdpUKD9jf1b0SHzUv
      KBds0pjBqAlkd25HN7rOrFleaJ1/ctaJxQZBKT5ZPt0m9STJEadao0xAH0ahmbWn
      OlFuhjuefXKnEgV4We0+UXgVCwOPjdAvBbI+e0ocS3MFEvzG6uBQE3xDk3SzynTn
      jh8BCNAw1FtxNrQHusEwMFxIt4I7mKZ9YIqioymCzLq9gwQbooMDQaHWBfEbwrbw
      qHyGO0aoSCqI3Haadr8faqU9GY/rOPNk3sgrDQoo//fb4hVC1CLQJ13hef4Y53CI
      rU7m2Ys6xt0nUW7/vGT1M0NPAgMBAAGjQjBAMA4GA1UdDwEB/wQEAwIBBjAPBgNV
      HRMBAf8EBTADAQH/MB0GA1UdDgQWBBR5tFnme7bl5AFzgAiIyBpY9umbbjANBgkq
      hkiG9w0BAQsFAAOCAgEAVR9YqbyyqFDQDLHYGmkgJykIrGF1XIpu+ILlaS/V9lZL
      ubhzEFnTIZd+50xx+7LSYK05qAvqFyFWhfFQDlnrzuBZ6brJFe+GnY+EgPbk6ZGQ
      3BebYhtF8GaV0nxvwuo77x/Py9auJ/GpsMiu/X1+mvoiBOv/2X/qkSsisRcOj/KK
      NFtY2PwByVS5uCbMiogziUwthDyC3+6WVwW6LLv3xLfHTjuCvjHIInNzktHCgKQ5
      ORAzI4JMPJ+GslWYHb4phowim57iaztXOoJwTdwJx4nLCgdNbOhdjsnvzqvHu7Ur
      TkXWStAmzOVyyghqpZXjFaH3pO3JLF+l+/+sKAIuvtd7u+Nxe5AW0wdeRlN8NwdC
      jNPElpzVmbUq4JUagEiuTDkHzsxHpFKVK7q4+63SM1N95R1NbdWhscdCb+ZAJzVc
      oyi3B43njTOQ5yOf+1CceWxG1bQVs5ZufpsMljq4Ui0/1lvh+wjChP4kqKOJ2qxq
      4RgqsahDYVvTH9w7jXbyLeiNdd8XM2w9U/t7y0Ff/9yi0GE44Za4rF2LN9d11TPA
      mRGunUHBcnWEvgJBQl9nJEiU0Zsnvgc/ubhPgXRR4Xq37Z0j4r7g1SgEEzwxA57d
      emyPxgcYxn/eR44/KJ4EBs+lVDR3veyJm+kXQ99b21/+jh5Xos1AnX5iItreGCc=
      -----END CERTIFICATE-----
    '';
    script = ''
      set -e
      mkdir -p "$out/etc/ssl/certs"
      printf '%s' "$pem" > "$out/etc/ssl/certs/ca-bundle.crt"
    '';
  };

  iana-etc = mk {
    name = "iana-etc-20231227";
    protocols = ''
      ip	0	IP
      icmp	1	ICMP
      tcp	6	TCP
      udp	17	UDP
      ipv6-icmp	58	IPv6-ICMP
    '';
    services = ''
      ssh	22/tcp
      domain	53/tcp
      domain	53/udp
      http	80/tcp
      https	443/tcp
    '';
    script = ''
      set -e
      mkdir -p "$out/etc"
      printf '%s' "$protocols" > "$out/etc/protocols"
      printf '%s' "$services" > "$out/etc/services"
    '';
  };

  libcommon = blob {
    name = "libcommon-1.0";
    file = "lib/libcommon.dat";
    size = 1048576;
    key = "000102030405060708090a0b0c0d0e0f";
  };

  libfig = blob {
    name = "libfig-2.2.5";
    file = "lib/libfig.dat";
    size = 524288;
    key = "101112131415161718191a1b1c1d1e1f";
  };

  bigdata = blob {
    name = "bigdata-1.0";
    file = "share/bigdata.dat";
    size = 8388608;
    key = "202122232425262728292a2b2c2d2e2f";
  };

  # A package set of 40 with a graph like a real one's, for layer
  # stability: graph.p00 (a libc) is under everything, and package i
  # references up to three lower ones, chosen by fixed arithmetic; each
  # holds 4 to 200 KiB of incompressible data of its own.
  graphN = 40;
  pad2 = i: if i < 10 then "0${toString i}" else toString i;
  mod = a: b: a - b * (a / b);
  graphDeps = i:
    let
      picks = builtins.genList (k:
        if mod (i + k) 3 == 0 then 0
        else mod (1000003 * (k + 1) + 7919) i) 3;
    in
    if i == 0 then [ ]
    else builtins.foldl' (acc: j: if builtins.elem j acc then acc
      else acc ++ [ j ]) [ 0 ] picks;
  graphPkg = i: mk {
    name = "g${pad2 i}-1.${toString (mod i 7)}";
    size = 4096 * (1 + mod (i * 37) 50);
    key = "00112233445566778899aabbccdd00${pad2 i}";
    deps = map (j: graph."p${pad2 j}") (graphDeps i);
    script = ''
      set -e
      mkdir -p "$out/lib"
      head -c "$size" /dev/zero |
          openssl enc -aes-128-ctr -nosalt -K "$key" \
          -iv 00000000000000000000000000000000 > "$out/lib/data"
      for d in $deps; do echo "$d"; done > "$out/lib/deps"
    '';
  };
  graph = builtins.listToAttrs (builtins.genList (i: {
    name = "p${pad2 i}";
    value = graphPkg i;
  }) graphN);

in
{
  inherit graph;
  inherit busybox bashInteractive coreutils moreutils nano cacert iana-etc;
  inherit libcommon libfig bigdata;

  hello = scriptBin {
    name = "hello-1.0";
    bin = "hello";
    meta.mainProgram = "hello";
    # For the SBOM: meta does not change the derivation.
    meta.license = { spdxId = "GPL-3.0-or-later"; };
    meta.homepage = "https://www.gnu.org/software/hello/";
    text = ''
      #!${busybox}/bin/sh
      # data: ${libcommon}/lib/libcommon.dat
      echo "hello from nixmirror"'';
  };

  figlet = scriptBin {
    name = "figlet-2.2.5";
    bin = "figlet";
    meta.mainProgram = "figlet";
    text = ''
      #!${busybox}/bin/sh
      # data: ${libcommon}/lib/libcommon.dat ${libfig}/lib/libfig.dat
      echo "figlet: $*"'';
  };

  cowsay = scriptBin {
    name = "cowsay-3.7.0";
    bin = "cowsay";
    text = ''
      #!${busybox}/bin/sh
      # data: ${libcommon}/lib/libcommon.dat
      echo "cowsay: $*"'';
  };

  # Only reachable as "htop" through case-insensitive lookup.
  Htop = scriptBin {
    name = "htop-3.2.2";
    bin = "htop";
    text = ''
      #!${busybox}/bin/sh
      echo "htop"'';
  };

  # "dup" matches both: an ambiguous name.
  Dup = scriptBin {
    name = "dup-1.0";
    bin = "dup";
    text = ''
      #!${busybox}/bin/sh
      echo "Dup"'';
  };
  DUP = scriptBin {
    name = "dup-upper-1.0";
    bin = "dup";
    text = ''
      #!${busybox}/bin/sh
      echo "DUP"'';
  };

  haskellPackages = {
    pandoc = scriptBin {
      name = "pandoc-3.1.9";
      bin = "pandoc";
      text = ''
        #!${busybox}/bin/sh
        echo "pandoc"'';
    };
  };

  broken = mk {
    name = "broken-1.0";
    script = ''
      echo "intentional failure" >&2
      exit 1
    '';
  };

  # A build that takes a while and then fails, so that it is never cached
  # and a test can watch it in progress (tests/e2e_status.sh).
  slowbroken = mk {
    name = "slowbroken-1.0";
    script = ''
      sleep 8
      echo "slow intentional failure" >&2
      exit 1
    '';
  };

  notADrv = 42;
}

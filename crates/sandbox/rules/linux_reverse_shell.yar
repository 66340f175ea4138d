// Shell scripts that open an interactive shell over a /dev/tcp socket: the classic
// one-line reverse shell dropped by Linux intrusions.
rule Linux_Script_ReverseShell
{
    meta:
        threat_name = "Linux.ReverseShell.Script"
        description = "script spawns an interactive shell wired to a /dev/tcp socket"
    strings:
        $shebang = "#!"
        $devtcp = "/dev/tcp/"
        $i1 = "bash -i"
        $i2 = "sh -i"
    condition:
        $shebang at 0 and $devtcp and any of ($i*)
}

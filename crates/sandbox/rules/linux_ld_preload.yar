// Scripts that install a library into /etc/ld.so.preload, a rootkit persistence trick.
rule Linux_Script_LdPreload_Persistence
{
    meta:
        threat_name = "Linux.Rootkit.LdPreload"
        description = "script writes /etc/ld.so.preload"
    strings:
        $shebang = "#!"
        $preload = "/etc/ld.so.preload"
        $w1 = "> /etc/ld.so.preload"
        $w2 = ">> /etc/ld.so.preload"
        $w3 = ">/etc/ld.so.preload"
    condition:
        $shebang at 0 and $preload and any of ($w*)
}

// EICAR anti-malware test file (https://www.eicar.org/download-anti-malware-testfile/).
// The standard says the file starts with this 68-byte string, optionally followed by
// white space, and is at most 128 bytes long.
rule EICAR_Test_File
{
    meta:
        threat_name = "EICAR-Test-File"
        description = "EICAR anti-malware test file"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar at 0 and filesize <= 128
}

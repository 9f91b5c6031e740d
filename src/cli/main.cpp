// lora — the command-line entry point: the subcommand table. Only cli/ parses argv or calls exit().
#include <cstdio>
int main(int argc, char** argv) { std::puts("lora: under construction"); return 0; }
